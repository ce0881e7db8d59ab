#!/usr/bin/env bash
# The README's main command: on a fresh CPU machine, generate the synthetic shapes set, train
# YOLOX-nano on it (about 10 minutes on 2 cores), evaluate (COCO mAP, prints AP50) and draw the
# detections on one validation image.  Usage: bash tools/run_demo.sh [extra exp overrides...]
#
# `bash tools/run_demo.sh ssd [extra ssd/train.py flags...]`: the SSD300-ResNet34 recipe for the
# same set instead: pre-train the ResNet-34 backbone on crops of the training shapes (the
# ImageNet start the MLPerf recipe assumes cannot be downloaded here), then train SSD on it with
# the backbone frozen, evaluating after every epoch (results.csv / results.png in ./ssd_output).
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

if [ "${1:-}" = ssd ]; then
    shift
    SSD_OUT=./ssd_output/shapes
    BACKBONE=./datasets/shapes_resnet34_crops.pth
    start=$(date +%s)
    "$PY" tools/pretrain_backbone.py --data "$DATA" --out "$BACKBONE" --minutes 4 --size 48 --seed 0
    pre_s=$(( $(date +%s) - start ))
    # the frozen backbone (its batch-norm statistics still adapt) makes a step ~2.6x cheaper; AdamW
    # at 1e-3 (--lr 0.004 per 32 images = 0.001 at batch 8) copes with the heads' badly scaled
    # curvature that keeps SGD bouncing at a loss of ~10; 0.2-epoch warm-up, x0.1 for the last epoch
    "$PY" ssd/train.py -d "$DATA" --pretrained-backbone "$BACKBONE" --trainable-backbone-layers 0 \
        --opt adamw --lr 0.004 --wd 1e-4 -b 8 --val-batch-size 16 --warmup 0.2 --epochs 6 \
        --lr-decay-schedule 5 --val-interval 1 --log-interval 25 --num-workers 1 -t 0.5 --seed 0 \
        --output-dir "$SSD_OUT" "$@"
    total_s=$(( $(date +%s) - start ))
    echo "backbone pre-training: ${pre_s} s; pre-training + SSD training + evaluations: ${total_s} s"
    echo "per-epoch curve: $SSD_OUT/results.csv, $SSD_OUT/results.png"
    exit 0
fi

start=$(date +%s)
"$PY" tools/train.py -f "$EXP" -b 8 --data_dir "$DATA" --seed 0 output_dir "$OUT" "$@"
train_s=$(( $(date +%s) - start ))

"$PY" tools/eval.py -f "$EXP" -c "$CKPT" -b 16 --data_dir "$DATA" output_dir "$OUT" | tee "$OUT/eval.txt"

IMG=$(ls "$DATA"/val2017/*.jpg | head -n 1)
"$PY" tools/demo.py image -f "$EXP" -c "$CKPT" --path "$IMG" --conf 0.3 --nms 0.45 --save_result output_dir "$OUT"

echo "training wall time: ${train_s} s"
echo "final $(grep '^AP50:' "$OUT/eval.txt")"
