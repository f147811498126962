#!/usr/bin/env bash
# One-machine rehearsal of the cluster path: a throwaway PostgreSQL 15 holds both the feedback
# store and an MLflow tracking server's database; the demo then runs against both.
# Needs root (initdb runs as the postgres user) and the repo's .venv. Run: bash deploy/rehearse-cluster.sh
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
D=/tmp/pgc; PORT=55433
rm -rf $D /tmp/mlart /tmp/clusterdemo; mkdir -p $D /tmp/clusterdemo; chown postgres $D
runuser -u postgres -- $BIN/initdb -D $D/data -A trust -U postgres >/dev/null
runuser -u postgres -- $BIN/pg_ctl -D $D/data -o "-p $PORT -k $D -c listen_addresses=127.0.0.1" -l $D/log start >/dev/null
runuser -u postgres -- $BIN/createdb -h 127.0.0.1 -p $PORT mlflow
runuser -u postgres -- $BIN/createdb -h 127.0.0.1 -p $PORT store
cd "$(dirname "$0")/.."; REPO=$PWD
.venv/bin/mlflow server --backend-store-uri postgresql+psycopg://postgres@127.0.0.1:$PORT/mlflow \
  --artifacts-destination /tmp/mlart --host 127.0.0.1 --port 5059 --workers 1 > /tmp/mlserver.log 2>&1 &
MLPID=$!
for i in $(seq 1 60); do sleep 2; curl -s -m 3 -o /dev/null http://127.0.0.1:5059/health && break; done
sed 's|state_dir: .driftloop|state_dir: state|; s|path: .driftloop/feedback/\*.jsonl|path: state/feedback/*.jsonl|' "$REPO"/driftloop.yaml > /tmp/clusterdemo/driftloop.yaml
cd /tmp/clusterdemo
rc=0
DRIFTLOOP_TRACKING__URI=http://127.0.0.1:5059 \
DRIFTLOOP_STORE__URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/store \
PREFECT_LOGGING_LEVEL=WARNING "$REPO"/.venv/bin/driftloop demo > /tmp/clusterdemo.log 2>&1 || rc=$?
echo "demo rc=$rc"
tail -12 /tmp/clusterdemo.log
curl -s "http://127.0.0.1:5059/api/2.0/mlflow/registered-models/alias?name=driftloop-model&alias=champion" | python3 -c "import json,sys; print('champion version', json.load(sys.stdin)['model_version']['version'])"
ls /tmp/mlart | head -3
psql -h 127.0.0.1 -p $PORT -U postgres -d store -Atc "select count(*) from feedback; select state from loop_state;"
kill $MLPID; runuser -u postgres -- $BIN/pg_ctl -D $D/data stop -m immediate >/dev/null
