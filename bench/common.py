"""Small timing helpers shared by the bench scripts: every script prints one JSON object per line."""
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# The MLPerf SSD-ResNet34 reference, extracted outside the repository by bench/get_mlperf_ssd.sh.
REF_SSD_DIR = os.environ.get("REF_SSD_DIR", "/work/ref_compare/mlperf_ssd")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def emit(**fields):
    """Print one JSON line (flushed so run_all.py sees it as it happens)."""
    print(json.dumps(fields, sort_keys=False), flush=True)


# Warm-up steps before a training step is timed, ours and every reference's alike: a fresh process
# faults its activations' memory in over the first steps (YOLOX-S fp32, Xeon: 500k, 250k, 17k
# minor faults in steps 1-3, then none; 2.2, 1.8, 1.65 s, then 1.64-1.70 s), and training runs
# in that later state.
STEP_WARMUP = 3


def time_median(fn, repeat=3, warmup=1, sync=None, first=None):
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    ``sync`` (e.g. ``lambda: accel.synchronize(device)``) ends every run: CUDA queues kernels
    asynchronously, so without it the clock would stop before the GPU has done the work. It is a
    parameter rather than an import because bench/ref_runner.py runs this function inside the
    reference virtualenv, where nothing of this project but bench/ is imported. ``first``: a list
    that receives the seconds of the very first run (warm-up or timed), e.g. a compiled step's
    compilation, reported apart from the median.
    """
    sync = sync or (lambda: None)
    times = []
    for k in range(warmup + repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        if k == 0 and first is not None:
            first.append(time.perf_counter() - t0)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_ops(step, top, **fields):
    """``step`` once as a warm-up, then once under torch.profiler: the ``top`` ops by self CPU
    time as JSON lines carrying ``fields`` (the line that explains where a step's time goes)."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    for e in events[:top]:
        emit(**fields, op=e.key, calls=e.count, self_cpu_ms=round(e.self_cpu_time_total / 1e3, 1),
             share=round(e.self_cpu_time_total / total, 3))


def settle_allocator():
    """Put glibc's malloc in the state a training process is in after its first step.

    glibc serves blocks above a dynamic threshold (128 KiB at start) with fresh mmaps and trims
    the heap's free top above twice that threshold; freeing one large mmapped block raises both.
    A fresh micro-benchmark process that allocates a few MiB per call therefore often faults all
    of it in again on every call (measured: the SSD encoder at 1 box, batch 32, 7.1-7.8 ms and
    ~2,800 minor faults per call vs 1.6-1.7 ms and none). After one SSD training step (b8) the
    activations freed have raised the threshold already: 0 faults per encoder call. Freeing one
    30 MiB block (under glibc's 32 MiB cap on the threshold) does the same here.
    """
    torch.empty(30 << 18)


def time_best(fn, repeat, warmup=1):
    """Fastest wall time in seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    For short CPU-only calls (the SSD encoders) on a shared 2-core machine the minimum is the
    least disturbed estimate. It lives here, not in one script, because bench/ssd_ref_runner.py
    times the MLPerf reference with it: both sides of a comparison must use the same statistic
    and the same allocator state (``settle_allocator``).
    """
    settle_allocator()
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops(dtype=torch.float32, n=2048, repeat=10, device="cpu", sync=None):
    """The machine's dense matmul rate (FLOP/s) for ``dtype`` on ``device``, best of ``repeat``:
    the ceiling a training step is judged by (the best run is the least disturbed by anything
    else). ``sync`` as in ``time_median``; on a GPU pass a larger ``n`` (2048^3 is over in
    microseconds there). CUDA's fp32 rate is what ``torch.backends.cuda.matmul.allow_tf32`` makes
    it (off by default), while cuDNN convolutions use TF32 by default."""
    sync = sync or (lambda: None)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def cpu_name():
    """The CPU's model name (/proc/cpuinfo on Linux; the architecture where there is none): every
    figure names its CPU, because this project's machines change between an AMD part without
    AVX-512 and an Intel one with AMX, and their ratios differ (bf16 above all)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device="cpu"):
    """A short description of where the numbers were taken (with the GPU's name on CUDA)."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        info.update(device="cuda", gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return info


def add_device_arg(parser):
    """``--device cpu|cuda`` for the step benchmarks (cpu by default, as before the flag)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the step runs (cuda: timed with torch.cuda.synchronize)")
    return parser


def add_peer_path_arg(parser):
    """``--peer-path``: where the released YOLOX 0.3.0's source and its pure-Python dependencies
    are (bench/README.md says how to fetch them), for the benchmarks that run it in a child."""
    parser.add_argument("--peer-path", default=os.environ.get(
                        "YOLOX030_PATH", "/work/ref_compare/yolox-0.3.0:/work/ref_compare/yolox-0.3.0-deps"),
                        help="folders put first on the released YOLOX child's sys.path: its source "
                             "(holding yolox/), then its pure-Python dependencies (thop, tqdm)")
    return parser


def make_shapes(out, num_train, num_val, seed=0):
    """tools/make_shapes.py's generator (tools/ is not a package, so load it by path)."""
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "tools" / "make_shapes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_shapes(out, num_train, num_val, seed=seed)


def has_mlperf_ssd(ref_dir=REF_SSD_DIR):
    """Whether ``ref_dir`` holds the extracted MLPerf SSD reference (its ssd300.py)."""
    return (Path(ref_dir) / "ssd300.py").is_file()


def run_mlperf_ssd(ref_dir, mode, inputs):
    """Run bench/ssd_ref_runner.py ``mode`` on ``inputs`` (saved to a temporary .pt) in a fresh
    interpreter with this process's thread count; returns (its JSON result, whatever it saved to
    the input's ``out`` path or None).

    A subprocess because the reference is a directory of top-level modules (``utils``, ``train``,
    ``eval``) that must not meet this project's; the current interpreter because the reference
    needs nothing this project does not (torch, torchvision, mlperf_logging).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "inputs.pt"), os.path.join(tmp, "outputs.pt")
        torch.save({**inputs, "out": out}, path)
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ssd_ref_runner.py"), str(ref_dir), mode,
                               path, str(torch.get_num_threads())], capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
            raise SystemExit(f"MLPerf SSD reference ({mode}) failed: {tail}")
        written = torch.load(out, weights_only=False) if os.path.exists(out) else None
    return json.loads(proc.stdout.strip().splitlines()[-1]), written
