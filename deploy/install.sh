#!/usr/bin/env bash
# Set up one of scilens's two tested stacks in a venv. Safe to rerun: it only does what is missing.
#   deploy/install.sh STACK [VENV_DIR]
#     STACK current  (default VENV .venv):         Databricks 17.3 LTS ML's versions, pyspark 4.0, TF 2.19/Keras 3
#     STACK horovod  (default VENV .venv-horovod): pyspark 3.5, numpy 1.26, pyarrow 14, TF 2.15.1, Horovod, Petastorm
# The venv gets exactly constraints/STACK.txt (a pip freeze of a tested install) and scilens, editable.
# A venv holding another stack, or an older version of this stack's constraints, is rebuilt from scratch,
# so nothing of a previous install lingers in it.
# Environment: PYTHON (a Python 3.11 to build the venv from), SCILENS_CACHE (default ~/.cache/scilens).
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${1:?usage: deploy/install.sh current|horovod [VENV_DIR]}
case "$STACK" in
  current) VENV=${2:-.venv} ;;
  horovod) VENV=${2:-.venv-horovod} ;;
  *) echo "unknown stack '$STACK': give current or horovod" >&2; exit 2 ;;
esac
CONSTRAINTS=constraints/$STACK.txt
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
CACHE=${SCILENS_CACHE:-$HOME/.cache/scilens}
HOROVOD_VERSION=0.28.1
say() { printf '[install %s] %s\n' "$STACK" "$*"; }

# --- Java 17+ (Spark 4 needs it; Spark 3.5 runs on it too) ---------------------------
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

# --- Python environment: exactly the constraints file ------------------------------------
want="$STACK $(sha256sum "$CONSTRAINTS" | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.scilens-stack" 2>/dev/null)" != "$want" ]; then
  say "$VENV holds another stack or an older $CONSTRAINTS ($(cat "$VENV/.scilens-stack" 2>/dev/null || echo unknown)): rebuilding it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "Python 3.11 is required (both stacks are tested on it; TensorFlow 2.15 has no 3.12 build);" \
         "set PYTHON=/path/to/python3.11" >&2; exit 1; }
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
say "installing $CONSTRAINTS into $VENV"
# The frozen set as requirements, then scilens without dependencies: no resolver run, so the venv is the
# tested set whatever PyPI holds today. The horovod stack installs tensorflow-cpu and xgboost-cpu (the
# distributions its cached Horovod build was made against; no CUDA on this path) where scilens's metadata
# names tensorflow and xgboost, so pip check's complaint about exactly those two is expected there.
"${PIP[@]}" install -r "$CONSTRAINTS" 2> >(grep -v "^WARNING: Location 'file:" >&2)
"${PIP[@]}" install --no-deps --no-build-isolation -e .
echo "$want" >"$VENV/.scilens-stack"

# --- Horovod (horovod stack only): built from source once, wheel cached outside the repo ---------
if [ "$STACK" = horovod ] && ! "$PY" -c 'import horovod.tensorflow' 2>/dev/null; then
  TF_VERSION=$(awk -F'==' 'tolower($1) == "tensorflow-cpu" {print $2}' "$CONSTRAINTS")
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

# --- The stack imports and is consistent -------------------------------------------------------
expected_gaps='^scilens [^ ]+ requires (tensorflow|xgboost), which is not installed\.$'
problems=$("$PY" -m pip check 2>&1 | grep -v '^No broken requirements found' || true)
[ "$STACK" = horovod ] && problems=$(grep -Ev "$expected_gaps" <<<"$problems" || true)
[ -z "$problems" ] || { echo "$problems" >&2; echo "pip check: $VENV is inconsistent (see above)" >&2; exit 1; }
modules="pyspark, tensorflow, xgboost, dipy, astropy, photutils, reproject, scilens"
[ "$STACK" = horovod ] && modules="$modules, horovod.tensorflow, horovod.spark, petastorm"
TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c "import $modules" \
  || { echo "installed stack does not import; see the errors above" >&2; exit 1; }
say "ready in $VENV: $(TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c 'import numpy, pyarrow, pyspark, tensorflow
print("pyspark", pyspark.__version__, "numpy", numpy.__version__, "pyarrow", pyarrow.__version__,
      "tensorflow", tensorflow.__version__)' 2>/dev/null)"
