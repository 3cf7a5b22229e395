#!/usr/bin/env bash
# Set up .venv with the pinned, tested stack. Safe to rerun: it only does what is missing.
#   deploy/install.sh [VENV_DIR]
# Environment: PYTHON (interpreter to build the venv from), SCILENS_CACHE (default ~/.cache/scilens).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
CACHE=${SCILENS_CACHE:-$HOME/.cache/scilens}
HOROVOD_VERSION=0.28.1
TF_VERSION=2.15.1
say() { printf '[install] %s\n' "$*"; }

# --- Java 17+ (Spark 4 needs it) -------------------------------------------------
java_major() { java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}'; }
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  line="apt-get install -y --no-install-recommends openjdk-17-jre-headless"
  if [ "$(id -u)" = 0 ]; then
    say "Java 17+ missing: installing it ($line)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive $line
  else
    echo "Java 17 or newer is required by Spark. Install it with:  sudo apt-get update && sudo $line" >&2
    exit 1
  fi
fi
say "java $(java_major) at $(command -v java)"

# --- Fashion-MNIST: the real image set of the model-diagnosis benchmark (Debian's dataset-fashion-mnist) ---
FASHION_DIR=${SCILENS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$FASHION_DIR/t10k-labels-idx1-ubyte.gz" ]; then
  line="apt-get install -y --no-install-recommends dataset-fashion-mnist"
  if [ "$(id -u)" = 0 ] && [ -z "${SCILENS_FASHION_MNIST:-}" ]; then
    say "Fashion-MNIST missing: installing it ($line)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive $line
  else
    echo "Fashion-MNIST is required and not in $FASHION_DIR (Debian package dataset-fashion-mnist)." >&2
    echo "Install it with:  sudo apt-get update && sudo $line" >&2
    echo "or set SCILENS_FASHION_MNIST to a folder holding its four *-ubyte.gz files." >&2
    exit 1
  fi
fi
say "Fashion-MNIST in $FASHION_DIR"

# --- Python environment ------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 11)))' || {
    echo "Python 3.10 or 3.11 is required (TensorFlow 2.15); set PYTHON=/path/to/python3.11" >&2; exit 1; }
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -c constraints.txt pip setuptools wheel
say "installing scilens and the pinned stack (constraints.txt)"
"${PIP[@]}" install -c constraints.txt -e ".[astro,ml,dev]"

# --- Horovod: built from source once, wheel cached outside the repo -------------------
if ! "$PY" -c 'import horovod.tensorflow' 2>/dev/null; then
  pytag=$("$PY" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
  wheel_dir="$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$pytag"
  if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
    say "building Horovod $HOROVOD_VERSION from source (about 5 minutes; cached in $wheel_dir)"
    build=$(mktemp -d)
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_WITHOUT_PYTORCH=1 MAKEFLAGS="-j$(nproc)" \
      "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$build" "horovod==$HOROVOD_VERSION"
    mkdir -p "$wheel_dir" && mv "$build"/horovod-*.whl "$wheel_dir"/ && rm -rf "$build"
  fi
  say "installing Horovod from $wheel_dir"
  "${PIP[@]}" install --no-deps "$wheel_dir"/horovod-*.whl
fi
TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c 'import horovod.tensorflow, pyspark, tensorflow, petastorm, dipy, astropy' \
  || { echo "installed stack does not import; see the errors above" >&2; exit 1; }
say "ready: $(TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c 'import pyspark, tensorflow, horovod; print("pyspark", pyspark.__version__, "tensorflow", tensorflow.__version__, "horovod", horovod.__version__)')"
