#!/usr/bin/env bash
# Installs the feature_store Python package into a virtualenv, for notebooks:
# builds the wheel once with maturin into dist/ (profile `dist`: optimized,
# stripped, thin LTO; it compiles the dependency tree in that profile, about
# half an hour or more on a 2-core machine the first time (a clean release build of
# the CLI took 27 minutes there), minutes after a change),
# then installs it with the pandas and polars extras.
#
#   scripts/py-install.sh [ENV_DIR]     (default .venv; created if absent)
#   jupyter: ENV_DIR/bin/python -m ipykernel install --user --name feature-store
#
# For development against this checkout use scripts/py-develop.sh instead: a
# debug build that reuses the test build's compiled crates (fast to build,
# slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_DIR="${1:-.venv}"
[ -x "$ENV_DIR/bin/python" ] || python3 -m venv "$ENV_DIR"
ENV_DIR=$(cd "$ENV_DIR" && pwd)
echo "==> maturin into $ENV_DIR"
"$ENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.7,<2"
echo "==> Building the wheel into dist/ (cargo profile dist, target dir target/)"
started=$(date +%s)
"$ENV_DIR/bin/maturin" build --profile dist --out dist -m feature-store-py/Cargo.toml \
  --interpreter "$ENV_DIR/bin/python"
echo "    built in $(( $(date +%s) - started ))s"
wheel=$(ls -t dist/feature_store-*.whl | head -1)
echo "==> Installing $wheel with the pandas and polars extras"
# A development link (scripts/py-develop.sh) would shadow the installed package.
site=$("$ENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site/feature_store_dev.pth"
"$ENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall "$wheel[pandas,polars]"
"$ENV_DIR/bin/python" -c 'import feature_store; print("feature_store", feature_store.__version__, "installed at", feature_store.__file__)'
ls -l "$wheel"
