#!/usr/bin/env bash
# The docs/experiments.md walkthrough end to end on generated data (CPU; ~10 minutes on 2 cores):
#
#   bash bench/experiments_walkthrough.sh [WORK_DIR]      (default /tmp/detkit_experiments)
#
# 1. shapes data: 400 train / 200 val images;
# 2. two YOLOX-nano runs logged to MLflow's local default store in WORK_DIR (5 and 10 epochs, the
#    same seed), the 10-epoch one registered as "shapes-nano";
# 3. the registered model served by `mlflow models serve`, one val image posted over REST, and
#    the same image through tools/demo.py image --onnx (the answers are printed side by side);
# 4. tools/compare.py: 10 epochs against 5, and the 10-epoch run against itself.
# Needs mlflow (pip install -e .[mlflow]) and curl.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/detkit_experiments}
PY=${PYTHON:-python}
PORT=${PORT:-5931}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export MLFLOW_EXPERIMENT_NAME=shapes-walkthrough
EXP="$ROOT/exps/example/shapes/yolox_nano_shapes.py"

"$PY" "$ROOT/tools/make_shapes.py" --out data --num-train 400 --num-val 200 --seed 0
for E in 5 10; do
    REGISTER=()
    [ "$E" = 10 ] && REGISTER=(--register shapes-nano)
    "$PY" "$ROOT/tools/train.py" -f "$EXP" -expn "e$E" -b 8 --data_dir data --seed 0 -l mlflow "${REGISTER[@]}" \
        max_epoch "$E" output_dir runs 2>&1 | grep -E "MLflow|registered|training done" || true
done

# serve the registered model and post one val image; the demo on the same image for comparison
IMG=$(ls data/val2017/*.jpg | head -1)
"$PY" -m mlflow models serve -m models:/shapes-nano/1 --env-manager local --host 127.0.0.1 -p "$PORT" \
    > serve.log 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break; sleep 1; done
printf '{"dataframe_split": {"columns": ["image"], "data": [["%s"]]}}' "$(base64 -w0 "$IMG")" > request.json
curl -s "http://127.0.0.1:$PORT/invocations" -H 'Content-Type: application/json' -d @request.json > response.json
echo "REST answer for $IMG:"
"$PY" -c "import json; [print(' ', p) for p in json.load(open('response.json'))['predictions']]"
"$PY" "$ROOT/tools/demo.py" image --onnx runs/e10/registered/model.onnx --path "$IMG" --save-json \
    --output_dir demo > demo.log 2>&1
echo "tools/demo.py image --onnx on the same image (predictions.json):"
"$PY" -c "import json, glob; [print(' ', p) for p in json.load(open(glob.glob('demo/**/predictions.json', recursive=True)[0]))]"

"$PY" "$ROOT/tools/compare.py" runs/e5 runs/e10 --data data --output-dir compare
"$PY" "$ROOT/tools/compare.py" runs/e10 runs/e10 --data data --output-dir compare_self
echo "outputs in $WORK (mlflow ui --backend-store-uri sqlite:///$WORK/mlflow.db shows the runs)"
