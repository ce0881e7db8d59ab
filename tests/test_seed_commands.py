"""Every command line of the two seed recipes' READMEs, as their users type them, with the HPU
flags replaced by ``--device cpu`` and sizes made small (trailing ``key value`` overrides, fewer
epochs / iterations, 2 processes instead of 8), on the generated shapes set: each ends in a COCO
summary. SSD's ``--autocast`` is left out: bf16 on this CPU is an order of magnitude slower than
fp32, and the bf16 path is covered by the precision tests."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["input_size", "96,96", "test_size", "96,96", "data_num_workers", "0", "multiscale_range", "0"]
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def run(argv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


YOLOX_SEED = {
    # Habana 1.6.1 README, first command
    "hpu-steps": "--name yolox-s --batch-size 8 --data_dir {data} --use_hpu steps 2 output_dir {out}",
    # Habana 1.6.1 README, 8-card HMP command (2 processes here)
    "hpu-hmp-8card": "--name yolox-s --devices 2 --batch-size 8 --data_dir {data} --use_hpu --hmp "
                     "--hmp-opt-level O1 --hmp-fp32 {root}/ops_fp32_yolox.txt --hmp-bf16 "
                     "{root}/ops_bf16_yolox.txt print_interval 100 max_epoch 1 save_history_ckpt False "
                     "eval_interval 300 steps 1 output_dir {out}",
    # Habana 1.23 README: --hpu spelling, autocast
    "hpu-autocast": "--name yolox-s --devices 1 --batch-size 8 --data_dir {data} --hpu --autocast "
                    "steps 1 output_dir {out}",
}


@pytest.mark.parametrize("name", sorted(YOLOX_SEED))
def test_yolox_seed_command(name, shapes_coco, tmp_path):
    line = YOLOX_SEED[name].format(data=shapes_coco, out=tmp_path / "out", root=ROOT)
    argv = line.replace("--use_hpu", "--device cpu").replace("--hpu ", "--device cpu ").split()
    out = run([str(ROOT / "tools" / "train.py"), *argv, *SMALL], tmp_path)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in out or "no detections: AP and AR are 0" in out
    assert (tmp_path / "out" / "yolox_s" / "latest_ckpt.pth").is_file()
    assert (tmp_path / "out" / "yolox_s" / "best_ckpt.pth").is_file()


def test_ssd_seed_command(shapes_coco, tmp_path):
    # Habana SSD README, 1 card: --use-hpu --hpu-lazy-mode replaced, sizes made small
    line = (f"-d {shapes_coco} --batch-size 4 --num-workers 0 --epochs 1 --log-interval 1 "
            "--val-interval 1 --use-hpu --hpu-lazy-mode --end-iteration 2")
    argv = line.replace("--use-hpu --hpu-lazy-mode", "--device cpu").split()
    out = run([str(ROOT / "ssd" / "train.py"), *argv], tmp_path)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in out or "no detections: AP and AR are 0" in out


def test_habana_only_flags_off_hpu_are_refused_in_one_line(shapes_coco, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    proc = subprocess.run([sys.executable, str(ROOT / "ssd" / "train.py"), "-d", str(shapes_coco),
                           "--device", "cpu", "--hpu-lazy-mode"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    err = [ln for ln in proc.stderr.splitlines() if " | " not in ln]
    assert proc.returncode == 2 and err == ["error: --hpu-lazy-mode needs --device hpu (got --device cpu)"]
