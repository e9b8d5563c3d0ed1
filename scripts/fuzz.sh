#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers and decoders:
# definition and config YAML, durations/sizes/feature references, online
# records and value decoders, registry documents, stream records as ingestion
# decodes them, and the feature server's requests (JSON bodies of its HTTP
# handlers, the gRPC GetOnlineFeatures message) as its handlers parse them
# and turn their columns into Arrow. Runs on the stable
# toolchain (no sanitizer; panics and hangs are what is looked for).
#
#   scripts/fuzz.sh            each target for 10 s (scripts/test.sh runs 8 s)
#   scripts/fuzz.sh 600        each target for 10 minutes
#   scripts/fuzz.sh 600 online_codec
#   scripts/fuzz.sh 600 --save   (keep what the run found in the corpora)
#
# The corpora are kept in the repo as fuzz/corpus/<target>.tar.gz (one
# archive per target rather than thousands of files); a run unpacks them into
# fuzz/target/corpus/. `--save` (after the seconds) minimizes what the run
# found (`cargo fuzz cmin`) and writes the archives back. A crash is saved
# under fuzz/artifacts/<target> and fails the run: add it as a regression test
# (and to the corpus).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-10}"
shift || true
save=0
if [ "${1:-}" = "--save" ]; then
  save=1
  shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(definitions_yaml config_yaml durations_and_sizes online_codec registry_document stream_record server_request)
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build --sanitizer none -O
for t in "${targets[@]}"; do
  work="target/corpus/$t"
  rm -rf "$work"
  mkdir -p target/corpus
  if [ -f "corpus/$t.tar.gz" ]; then
    tar -C target/corpus -xzf "corpus/$t.tar.gz"
  fi
  mkdir -p "$work"
  # -timeout: an input taking over 10 s is a hang and fails the run.
  out=$(cargo fuzz run --sanitizer none -O "$t" "$work" -- -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40 >&2
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t" >&2
    exit 1
  }
  runs=$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p' | tail -1)
  echo "fuzz $t: ${runs:-?} executions in ${seconds} s, no crash"
  if [ "$save" = 1 ]; then
    cargo fuzz cmin --sanitizer none -O "$t" "$work" >/dev/null 2>&1
    tar -C target/corpus -czf "corpus/$t.tar.gz" "$t"
  fi
done
