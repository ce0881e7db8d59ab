#!/usr/bin/env bash
# Build a virtualenv with the oldest torch / torchvision the project supports (those of Habana's SSD
# container: PyTorch 2.0.1, torchvision 0.15.2; NumPy 1.x as they need) and run the unit tests in
# it, so the floors in requirements.txt are proven, not guessed. Usage: bash tools/check_oldest_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-oldest}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.0.1" "torchvision==0.15.2" "numpy<2"
"$VENV/bin/python" -m pip install -q -e ".[test]" "torch==2.0.1" "torchvision==0.15.2" "numpy<2"
"$VENV/bin/python" -c "import torch, torchvision, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__)"
# the unit tests: models, losses, encoder, data, checkpoints, exp system, HPU seam, architecture
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_accel_device.py tests/test_accel_precision.py tests/test_accel_hpu_seam.py \
    tests/test_architecture.py tests/test_checkpoint_io.py tests/test_coco_eval.py \
    tests/test_recipe_fidelity.py tests/test_reliability.py tests/test_ssd_train_cli.py \
    tests/test_ssd_encoder_anchors.py tests/test_ssd_encoder_match.py tests/test_ssd_encoder_decode.py \
    tests/test_ssd_loss_values.py tests/test_ssd_model_structure.py tests/test_ssd_data_aug.py \
    tests/test_yolox_models_head.py tests/test_yolox_loss_hand.py tests/test_yolox_loss_batched.py \
    tests/test_yolox_data_coco.py tests/test_yolox_data_transforms.py tests/test_yolox_exp_merge.py \
    tests/test_yolox_train_schedule.py tests/test_yolox_models_manifest.py "$@"
