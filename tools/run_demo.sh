#!/usr/bin/env bash
# The README's main command: on a fresh CPU machine, generate the synthetic shapes set, train
# YOLOX-nano on it (about 10 minutes on 2 cores), evaluate (COCO mAP, prints AP50) and draw the
# detections on one validation image.  Usage: bash tools/run_demo.sh [extra exp overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
DATA=./datasets/shapes
EXP=exps/example/shapes/yolox_nano_shapes.py
OUT=./yolox_output
CKPT=$OUT/yolox_nano_shapes/best_ckpt.pth

if ! "$PY" -m pip show -q detkit >/dev/null 2>&1; then
    "$PY" -m pip install -q -e .
fi
if [ ! -f "$DATA/annotations/instances_val2017.json" ]; then
    "$PY" tools/make_shapes.py --out "$DATA" --num-train 1000 --num-val 100 --seed 0
fi

start=$(date +%s)
"$PY" tools/train.py -f "$EXP" -b 8 --data_dir "$DATA" --seed 0 output_dir "$OUT" "$@"
train_s=$(( $(date +%s) - start ))

"$PY" tools/eval.py -f "$EXP" -c "$CKPT" -b 16 --data_dir "$DATA" output_dir "$OUT" | tee "$OUT/eval.txt"

IMG=$(ls "$DATA"/val2017/*.jpg | head -n 1)
"$PY" tools/demo.py image -f "$EXP" -c "$CKPT" --path "$IMG" --conf 0.3 --nms 0.45 --save_result output_dir "$OUT"

echo "training wall time: ${train_s} s"
echo "final $(grep '^AP50:' "$OUT/eval.txt")"
