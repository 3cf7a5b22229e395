#!/usr/bin/env bash
# A real Spark standalone cluster on this machine: one master and two one-core workers on 127.0.0.1.
#   deploy/local-cluster.sh start|stop|status
# Environment: SCILENS_MASTER_PORT (7077), SCILENS_MASTER_UI_PORT (8080), SCILENS_WORKER_MEMORY (2g),
#              SCILENS_CLUSTER_DIR (.cluster: PID files, logs, work dirs), PYTHON (.venv/bin/python),
#              SCILENS_SCRUB_ENV (1: nodes that cannot see this machine's Python, as on a real cluster: master
#              and workers start with an emptied environment (system PATH, no PYSPARK_PYTHON, no PYTHONPATH)
#              and a copy of Spark's jars and scripts in SCILENS_CLUSTER_DIR/spark as SPARK_HOME, not the one
#              inside the venv; jobs then bring their Python with deploy/submit.sh --env-archive).
# `stop` ends only the processes whose PIDs `start` recorded.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
STATE=${SCILENS_CLUSTER_DIR:-$ROOT/.cluster}
PORT=${SCILENS_MASTER_PORT:-7077}
UI=${SCILENS_MASTER_UI_PORT:-8080}
MEMORY=${SCILENS_WORKER_MEMORY:-2g}
SCRUB=${SCILENS_SCRUB_ENV:-0}
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$PY
export SPARK_HOME=${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
MASTER_URL="spark://127.0.0.1:$PORT"

alive_workers() {
  "$PY" - "$UI" <<'PYEOF' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2) as r:
    print(json.load(r).get("aliveworkers", 0))
PYEOF
}

node_spark_home() {  # Spark's jars and scripts outside any Python environment (hard links when possible)
  local home="$STATE/spark"
  if [ ! -d "$home/jars" ]; then
    mkdir -p "$home"
    for d in bin sbin jars conf; do
      [ -d "$SPARK_HOME/$d" ] || continue
      cp -al "$SPARK_HOME/$d" "$home/$d" 2>/dev/null || { rm -rf "${home:?}/$d"; cp -a "$SPARK_HOME/$d" "$home/$d"; }
    done
  fi
  echo "$home"
}

launch() {  # name, class, args...
  local name=$1; shift
  if [ "$SCRUB" = 1 ]; then
    local home; home=$(node_spark_home)
    nohup env -i HOME="$HOME" LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      ${JAVA_HOME:+JAVA_HOME="$JAVA_HOME"} SPARK_HOME="$home" SPARK_LOCAL_IP=127.0.0.1 \
      "$home/bin/spark-class" "$@" >"$STATE/$name.log" 2>&1 &
  else
    nohup "$SPARK_HOME/bin/spark-class" "$@" >"$STATE/$name.log" 2>&1 &
  fi
  echo $! >"$STATE/$name.pid"
}

start() {
  if [ -f "$STATE/master.pid" ] && kill -0 "$(cat "$STATE/master.pid")" 2>/dev/null; then
    echo "already running: $MASTER_URL (PIDs in $STATE)"; return 0
  fi
  mkdir -p "$STATE"
  launch master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$PORT" --webui-port "$UI"
  for i in 1 2; do
    launch "worker$i" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores 1 --memory "$MEMORY" \
      --webui-port 0 --work-dir "$STATE/work$i" "$MASTER_URL"
  done
  for _ in $(seq 1 90); do
    [ "$(alive_workers)" = 2 ] && { echo "standalone cluster up: $MASTER_URL (UI http://127.0.0.1:$UI)"; return 0; }
    sleep 1
  done
  echo "cluster did not come up within 90 s; logs in $STATE" >&2
  stop; return 1
}

stop() {
  for name in worker1 worker2 master; do
    local f="$STATE/$name.pid"
    [ -f "$f" ] || continue
    local pid; pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  rm -rf "$STATE/spark"
  echo "standalone cluster stopped"
}

status() {
  if [ -f "$STATE/master.pid" ] && kill -0 "$(cat "$STATE/master.pid")" 2>/dev/null; then
    echo "running: $MASTER_URL with $(alive_workers) worker(s)"
  else
    echo "not running"; return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
