#!/usr/bin/env bash
# Pack a stack's environment, with scilens installed from its wheel, into an archive executors unpack.
#   deploy/pack.sh [--venv DIR] [--output-dir DIR] [--compress-level 0-9] [--python-prefix DIR] [current|horovod]
# -> dist/scilens-<version>-<stack>-py<XY>-<platform>.tar.gz, with environment-meta.json (stack, Python,
#    key package versions) as its first member; submit it with deploy/submit.sh --env-archive.
# --venv: the stack's venv (default .venv for current, .venv-horovod for horovod; built with
#   deploy/install.sh <stack> <dir> when missing). It is not changed: its editable scilens, which venv-pack
#   refuses and which would point executors at this checkout, is replaced in a hard-linked copy.
# --python-prefix: where the executors' Python 3.X lives (e.g. /usr), when not at this venv's base
#   interpreter's path: venv-pack links the archive's bin/python to it rather than shipping an interpreter.
# Environment: SCILENS_CACHE (default ~/.cache/scilens: venv-pack itself), SCILENS_PACK_COMPRESS_LEVEL.
set -euo pipefail
# Only the venv's own packages: a PYTHONPATH (a test run's lib/) would hide its scilens from pip.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE
export PYTHONNOUSERSITE=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SCILENS_CACHE:-$HOME/.cache/scilens}
VENV_PACK_VERSION=0.2.0
OUT=$ROOT/dist
LEVEL=${SCILENS_PACK_COMPRESS_LEVEL:-1}
VENV=""
PYTHON_PREFIX=""
STACK=current
usage="usage: $0 [--venv DIR] [--output-dir DIR] [--compress-level 0-9] [--python-prefix DIR] [current|horovod]"
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV=$2; shift 2 ;;
    --output-dir) OUT=$2; shift 2 ;;
    --compress-level) LEVEL=$2; shift 2 ;;
    --python-prefix) PYTHON_PREFIX=$2; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "pack.sh: unknown option $1; $usage" >&2; exit 2 ;;
    *) STACK=$1; shift ;;
  esac
done
case "$STACK" in
  current) VENV=${VENV:-$ROOT/.venv} ;;
  horovod) VENV=${VENV:-$ROOT/.venv-horovod} ;;
  *) echo "pack.sh: unknown stack '$STACK'; the stacks are current and horovod" >&2; exit 2 ;;
esac
[[ "$LEVEL" =~ ^[0-9]$ ]] || { echo "pack.sh: --compress-level must be 0-9, not '$LEVEL'" >&2; exit 2; }
say() { printf '[pack] %s\n' "$*"; }
started=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  say "no venv at $VENV: building the $STACK stack there (deploy/install.sh $STACK $VENV)"
  "$ROOT/deploy/install.sh" "$STACK" "$VENV"
fi
VENV=$(cd "$VENV" && pwd)
[ -f "$VENV/pyvenv.cfg" ] || { echo "pack.sh: $VENV is not a venv (no pyvenv.cfg)" >&2; exit 2; }
# The archive is labelled with its stack; a venv that is another stack must not be labelled this one.
found=$("$VENV/bin/python" "$ROOT/deploy/envmeta.py" stack) || exit 2
[ "$found" = "$STACK" ] || { echo "pack.sh: $VENV is the $found stack, not $STACK" >&2; exit 2; }

TOOL="$CACHE/tools/venv-pack-$VENV_PACK_VERSION"
if [ ! -f "$TOOL/venv_pack/__init__.py" ]; then
  say "installing venv-pack $VENV_PACK_VERSION into $TOOL"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install --no-deps --target "$TOOL" \
    "venv-pack==$VENV_PACK_VERSION"
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAGE=$(mktemp -d "$OUT/.pack-$STACK-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
"$VENV/bin/python" -m pip --disable-pip-version-check -q wheel --no-deps --no-build-isolation \
  -w "$STAGE/wheel" "$ROOT" >/dev/null
wheel=$(ls "$STAGE"/wheel/scilens-*.whl)

# Hard links make the copy cheap. Nothing below writes into a file it did not create (pip unlinks and
# writes new files, shebangs are rewritten into new files), so the original venv stays as it was.
env_dir="$STAGE/env"
if ! cp -al "$VENV" "$env_dir" 2>/dev/null; then
  rm -rf "$env_dir"
  say "$VENV is on another file system than $OUT: copying it"
  cp -a "$VENV" "$env_dir"
fi
PY="$env_dir/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
"${PIP[@]}" uninstall -y scilens
"${PIP[@]}" install --no-deps --no-index --no-compile "$wheel"
# Scripts copied from the venv start with #!<venv>/bin/python; point them at the copy so venv-pack makes
# them relocatable (#!/usr/bin/env python) as it does with its own prefix.
"$PY" - "$VENV" "$env_dir" <<'PYEOF'
import os, sys
old, new = (p.encode() for p in sys.argv[1:3])
bindir = os.path.join(sys.argv[2], "bin")
for name in os.listdir(bindir):
    path = os.path.join(bindir, name)
    if os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"#!" + old + b"/"):
        tmp = path + ".pack-tmp"
        with open(tmp, "wb") as f:
            f.write(b"#!" + new + data[2 + len(old):])
        os.chmod(tmp, os.stat(path).st_mode)
        os.replace(tmp, path)
PYEOF
"$PY" "$ROOT/deploy/envmeta.py" describe --stack "$STACK" >"$env_dir/environment-meta.json"

name=$("$PY" - "$STACK" <<'PYEOF'
import importlib.metadata, sys, sysconfig
print(f"scilens-{importlib.metadata.version('scilens')}-{sys.argv[1]}-py{sys.version_info[0]}{sys.version_info[1]}-"
      f"{sysconfig.get_platform()}.tar.gz")
PYEOF
)
say "packing $VENV (stack $STACK, scilens from $(basename "$wheel")) into $OUT/$name, gzip level $LEVEL"
pack_started=$(date +%s)
packed_mib=$(PYTHONPATH="$TOOL" "$VENV/bin/python" - "$env_dir" "$OUT/$name.tmp" "$LEVEL" "$PYTHON_PREFIX" <<'PYEOF'
import os
import sys

import venv_pack

prefix, output, level, python_prefix = sys.argv[1:5]
# Spark's jars stay out: executors run the cluster's own Spark JVM, and a driver in cluster mode is started by
# it, so the 440 MiB under pyspark/jars would be unpacked on every node for nothing; nor make's stamp file.
env = venv_pack.Env(prefix).exclude("lib/python*/site-packages/pyspark/jars/*").exclude(".installed-*")
# The metadata first: deploy/submit.sh reads it without decompressing the whole archive.
env.files = sorted(env.files, key=lambda f: f.target != "environment-meta.json")
env.pack(output=output, format="tar.gz", compress_level=int(level), python_prefix=python_prefix or None,
         force=True)
print(sum(os.lstat(f.source).st_size for f in env.files) // 2**20)
PYEOF
)
mv "$OUT/$name.tmp" "$OUT/$name"
ended=$(date +%s)
say "wrote $OUT/$name ($(du -m "$OUT/$name" | cut -f1) MiB from $packed_mib MiB) in $((ended - started)) s" \
    "($((ended - pack_started)) s compressing)"
echo "$OUT/$name"
