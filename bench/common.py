"""Small timing helpers shared by the bench scripts: every script prints one JSON object per line."""
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def emit(**fields):
    """Print one JSON line (flushed so run_all.py sees it as it happens)."""
    print(json.dumps(fields, sort_keys=False), flush=True)


def time_median(fn, repeat=3, warmup=1):
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops(dtype=torch.float32, n=2048, repeat=10):
    """The machine's dense matmul rate (FLOP/s) for ``dtype``, best of ``repeat``: the ceiling a
    training step is judged by (the best run is the least disturbed by anything else)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def machine():
    """A short description of where the numbers were taken."""
    import os
    import platform
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def make_shapes(out, num_train, num_val, seed=0):
    """tools/make_shapes.py's generator (tools/ is not a package, so load it by path)."""
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "tools" / "make_shapes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_shapes(out, num_train, num_val, seed=seed)
