#!/usr/bin/env bash
# Build the scilens wheel and spark-submit a job with it to any master.
#   deploy/submit.sh [--master URL] [--conf k=v ...] <job> --input PATH --output DIR [--config conf/<job>.yaml] ...
# e.g.  deploy/submit.sh --master spark://127.0.0.1:7077 ingest --input data/ --output out/ --config conf/ingest.yaml
# Environment: PYTHON (interpreter of driver and workers, default .venv/bin/python), SPARK_HOME.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MASTER=${SCILENS_MASTER:-local[*]}
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) MASTER=$2; shift 2 ;;
    --conf) extra+=(--conf "$2"); shift 2 ;;
    *) break ;;
  esac
done
job=${1:?usage: $0 [--master URL] <job> [job args...]}; shift
# The entry point is jobs/<job>.py, or the jobs/*.py file that runs job <job>.
entry="$ROOT/jobs/${job//-/_}.py"
[ -f "$entry" ] || entry=$(grep -l "main(\[\"$job\"" "$ROOT"/jobs/*.py 2>/dev/null | head -n 1)
[ -n "$entry" ] && [ -f "$entry" ] || { echo "no entry point in jobs/ for job '$job'" >&2; exit 2; }
SPARK_HOME=${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}

dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT
"$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$dist" "$ROOT" >/dev/null
wheel=$(ls "$dist"/scilens-*.whl)

case "$MASTER" in local*|spark://127.0.0.1*|spark://localhost*) export SPARK_LOCAL_IP=127.0.0.1 ;; esac
exec "$SPARK_HOME/bin/spark-submit" --master "$MASTER" --py-files "$wheel" \
  --conf "spark.pyspark.python=$PY" --conf "spark.pyspark.driver.python=$PY" "${extra[@]}" \
  "$entry" "$@"
