#!/usr/bin/env bash
# spark-submit a scilens job to any master, with scilens shipped as a wheel or inside a packed environment.
#   deploy/submit.sh [--master URL] [--deploy-mode client|cluster] [--conf k=v ...] [--env-archive ARCHIVE]
#                    <job | script.py> --input PATH --output DIR [--config conf/<job>.yaml] ...
# e.g.  deploy/submit.sh --master spark://127.0.0.1:7077 ingest --input data/ --output out/ --config conf/ingest.yaml
# Without --env-archive: builds the scilens wheel and ships it with --py-files; executors run PYTHON, which must
#   exist with the whole stack on every node (true only when every node is this machine).
# With --env-archive dist/<archive>.tar.gz (from deploy/pack.sh): executors unpack it as ./environment and run
#   ./environment/bin/python, scilens included; the driver runs PYTHON here (client mode) or the archive's Python
#   (cluster mode). An archive built for another stack or Python than PYTHON's is refused before anything starts.
# Environment: PYTHON (the submitting interpreter, default .venv/bin/python), SPARK_HOME.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MASTER=${SCILENS_MASTER:-local[*]}
MODE=client
ARCHIVE=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) MASTER=$2; shift 2 ;;
    --deploy-mode) MODE=$2; shift 2 ;;
    --conf) extra+=(--conf "$2"); shift 2 ;;
    --env-archive) ARCHIVE=$2; shift 2 ;;
    *) break ;;
  esac
done
job=${1:?usage: $0 [--master URL] [--deploy-mode client|cluster] [--env-archive ARCHIVE] <job> [job args...]}; shift
case "$MODE" in client|cluster) ;; *) echo "--deploy-mode must be client or cluster, not '$MODE'" >&2; exit 2 ;; esac
# The entry point is a script given by path, or jobs/<job>.py (entry points are named after their jobs).
if [[ "$job" == *.py ]] && [ -f "$job" ]; then
  entry=$job
else
  entry="$ROOT/jobs/${job//-/_}.py"
  # a job named like a standard-library module has its entry point as <name>_.py (see tests/test_deploy.py)
  [ -f "$entry" ] || entry="$ROOT/jobs/${job//-/_}_.py"
  [ -f "$entry" ] || { echo "no entry point in jobs/ for job '$job'" >&2; exit 2; }
fi

if [ -n "$ARCHIVE" ]; then
  # Before Spark starts: executors on another stack or Python than the driver fail only mid-job.
  "$PY" "$ROOT/deploy/envmeta.py" check "$ARCHIVE" >&2 || exit 2
  ARCHIVE=$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")
fi
SPARK_HOME=${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
case "$MASTER" in local*|spark://127.0.0.1*|spark://localhost*) export SPARK_LOCAL_IP=127.0.0.1 ;; esac

if [ -n "$ARCHIVE" ]; then
  ship=(--archives "$ARCHIVE#environment" --conf spark.pyspark.python=./environment/bin/python)
  # In cluster mode the driver runs in the cluster, beside its own unpacked copy of the archive.
  [ "$MODE" = client ] && ship+=(--conf "spark.pyspark.driver.python=$PY")
else
  dist=$(mktemp -d)
  trap 'rm -rf "$dist"' EXIT
  "$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$dist" "$ROOT" >/dev/null
  wheel=$(ls "$dist"/scilens-*.whl)
  ship=(--py-files "$wheel" --conf "spark.pyspark.python=$PY" --conf "spark.pyspark.driver.python=$PY")
fi
"$SPARK_HOME/bin/spark-submit" --master "$MASTER" --deploy-mode "$MODE" "${ship[@]}" "${extra[@]}" "$entry" "$@"
