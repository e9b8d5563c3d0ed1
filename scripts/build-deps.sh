#!/usr/bin/env bash
# What the build itself needs beyond a Rust toolchain and a C compiler, for
# both README commands: OpenSSL's headers and pkg-config, which librdkafka
# (the Kafka client, compiled from its bundled source) builds against.
# Installed with apt when absent.
set -euo pipefail
if ! pkg-config --exists openssl 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi
