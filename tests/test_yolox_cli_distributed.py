"""tools/train.py --devices 2 on CPU: relaunches itself under torchrun; 2 gloo ranks train one
short epoch (6 steps) and evaluate it sharded, gathering detections on rank 0."""
import os
import re
import subprocess
import sys

from detcore.training.checkpoints import load
from yolox_tools import ROOT, SHAPES_EXP, TINY


def test_two_process_gloo_training(shapes_coco, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                        "PMI_RANK", "PMI_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "-f", SHAPES_EXP, "-d", "2", "-b", "4",
           "--data_dir", str(shapes_coco), "--seed", "0", *TINY, "max_epoch", "1", "test_conf", "0.0",
           "output_dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.distributed.run" in proc.stderr and "over 2 process(es)" in proc.stderr
    assert "Average forward + NMS time" in proc.stderr and "(12 images)" in proc.stderr  # all val images once
    assert len(re.findall(r"epoch \d+: AP50:95 ", proc.stderr)) == 1                 # rank 0 reports
    ckpt = load(tmp_path / "yolox_nano_shapes" / "latest_ckpt.pth")
    assert (ckpt["start_epoch"], ckpt["iteration"], ckpt["ema_updates"]) == (1, 6, 6)  # 24 images / batch 4
    assert (tmp_path / "yolox_nano_shapes" / "best_ckpt.pth").is_file()
