"""Multi-process evaluation scores the model a one-process evaluation would: batch-norm
statistics are averaged over ranks first (upstream YOLOX's all_reduce_norm, the SSD reference)."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "accel_scripts" / "bn_eval.py"
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
               "PMI_RANK", "PMI_SIZE", "MASTER_ADDR", "MASTER_PORT")


def run(cmd):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ap, mean = re.search(r"^AP (\S+) mean_after (\S+)$", proc.stdout, re.M).groups()
    return float(ap), float(mean)


def test_two_process_eval_equals_one_process_eval_of_averaged_stats(shapes_coco):
    two, mean_two = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc_per_node", "2", str(SCRIPT), str(shapes_coco), "0.0", "0.2"])
    averaged, _ = run([sys.executable, str(SCRIPT), str(shapes_coco), "0.1"])
    own, _ = run([sys.executable, str(SCRIPT), str(shapes_coco), "0.0"])
    assert mean_two == 0.1                       # rank 0's statistics were replaced by the mean
    assert two == averaged                       # the same model as a 1-process eval
    assert own == 1.0 and averaged < 0.9         # and not the model rank 0 had on its own
