#!/usr/bin/env bash
# Makes `import feature_store` in .venv use this checkout: builds the
# extension (debug profile, the workspace's target dir, as the tests do),
# copies it next to the Python sources and puts them on .venv's path.
# Like `maturin develop`, without a second build of the dependency tree.
# `--no-build` skips the cargo step (scripts/test.sh has just built it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
export PYO3_PYTHON="$PWD/.venv/bin/python" PYO3_BUILD_EXTENSION_MODULE=1
if [ "${1:-}" != "--no-build" ]; then
  # The whole workspace, so features unify as in the test build and nothing rebuilds twice.
  cargo build --locked --workspace --all-targets
fi
lib=target/debug/lib_internal.so
[ -f "$lib" ] || lib=target/debug/lib_internal.dylib
cp "$lib" feature-store-py/python/feature_store/_internal.abi3.so
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/feature-store-py/python" > "$site/feature_store_dev.pth"
.venv/bin/python -c 'import feature_store; print("feature_store", feature_store.__version__, "from", feature_store.__file__)'
