#!/usr/bin/env bash
# A newcomer's first hour, timed: clones this checkout's HEAD (or COMMIT) into
# a fresh folder and runs, one after another, the demo, the test suite and the
# Python wheel install, as the README says; prints the time to the demo's first
# line, each step's time and the disk used.
#
#   scripts/first-hour.sh [COMMIT] [WORK_DIR]    (defaults: HEAD, a new temp folder)
#
# Reuses ~/.cargo's downloaded crates (not the compiled ones): run it on a
# quiet machine, each step competes for the same cores.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
COMMIT="${1:-HEAD}"
WORK="${2:-$(mktemp -d /tmp/first-hour.XXXXXX)}"
git clone --quiet "$SRC" "$WORK/repo"
cd "$WORK/repo"
git checkout --quiet "$COMMIT"
echo "first-hour: $(git log --oneline -1) in $WORK/repo on $(nproc) cores"
unset CARGO_TARGET_DIR

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.0f}')"; }

t0=$(now)
first=""
while IFS= read -r line; do
  [ -n "$first" ] || first=$(now)
  printf '%s\n' "$line" >> "$WORK/demo.log"
done < <(./scripts/demo.sh 2>&1; echo "demo exit $?")
t1=$(now)
tail -1 "$WORK/demo.log" | grep -q "demo exit 0" || { echo "demo failed: see $WORK/demo.log" >&2; exit 1; }
./scripts/test.sh > "$WORK/test.log" 2>&1 || { echo "tests failed: see $WORK/test.log" >&2; exit 1; }
t2=$(now)
./scripts/py-install.sh "$WORK/notebook-env" > "$WORK/py-install.log" 2>&1 \
  || { echo "wheel install failed: see $WORK/py-install.log" >&2; exit 1; }
t3=$(now)

echo "time to the demo's first line: $(secs "$t0" "$first") s"
echo "demo total:                    $(secs "$t0" "$t1") s"
echo "test suite after the demo:     $(secs "$t1" "$t2") s"
echo "wheel build + install after:   $(secs "$t2" "$t3") s"
echo "disk: target/ $(du -sh target | cut -f1), dist/ $(du -sh dist | cut -f1), .venv $(du -sh .venv | cut -f1)"
echo "wheel: $(ls -l dist/*.whl | awk '{print $5, $9}')"
echo "logs in $WORK"
