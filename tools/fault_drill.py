"""Fault drill: train a tiny model twice, once undisturbed and once with a fault, and check that
the faulted run finished by itself (or with the same command re-run) bit for bit equal.

    python tools/fault_drill.py --model yolox --fault sigkill --nproc 2 --data DIR --out DIR
    python tools/fault_drill.py --model ssd --fault sigterm --nproc 1 --data DIR --out DIR

Faults:
- ``sigkill``: the run goes under ``torchrun --max-restarts 3``; once it has written a periodic
  checkpoint inside its second epoch, the last rank's worker gets SIGKILL (a dead node); torchrun
  restarts the worker group, which resumes by itself from the newest complete checkpoint.
- ``sigterm``: once that checkpoint exists, the whole process group gets SIGTERM (what a scheduler
  sends, loader workers included); the run must write a checkpoint and exit 143, then the same
  command is run again and continues from it.

Prints one JSON line per run (seconds, exit codes, where the faulted run resumed) and one with the
verdict: every tensor of the final checkpoint (weights, EMA, optimizer state) equal or not. Exit
code 0 when equal. ``--data`` is a COCO-layout set such as ``tools/make_shapes.py`` writes.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES_EXP = ROOT / "exps" / "example" / "shapes" / "yolox_nano_shapes.py"
FINAL = {"yolox": Path("yolox_nano_shapes") / "latest_ckpt.pth", "ssd": Path("ssd300_latest.pth")}
PERIODIC = {"yolox": re.compile(r"iter_(\d{8})_ckpt\.pth$"), "ssd": re.compile(r"ssd300_iter_(\d{8})\.pth$")}
ITERS_PER_EPOCH = {"yolox": re.compile(r"epochs x (\d+) iterations"), "ssd": re.compile(r"(\d+) iterations/epoch")}


def script_args(model, data, out, world, epochs=2):
    """The tiny training script and its flags for ``world`` processes: YOLOX-nano at 160 px with
    multi-scale, mosaic and a loader worker; SSD300 at batch 1 per rank; a periodic checkpoint
    every 2 (YOLOX) / 1 (SSD) steps."""
    if model == "yolox":
        return [str(ROOT / "tools" / "train.py"), "-f", str(SHAPES_EXP), "-b", str(2 * world),
                "--data_dir", str(data), "--seed", "3", "input_size", "160,160", "test_size", "160,160",
                "data_num_workers", "1", "print_interval", "1", "warmup_epochs", "1",
                "multiscale_range", "1", "max_epoch", str(epochs), "no_aug_epochs", "0",
                "eval_interval", "100", "ckpt_interval", "2", "output_dir", str(out)]
    return [str(ROOT / "ssd" / "train.py"), "-d", str(data), "-b", "1", "-e", str(epochs),
            "--val-interval", "100", "--log-interval", "1", "--num-workers", "1", "-s", "5",
            "--pretrained-backbone", "none", "--checkpoint-interval", "1", "--output-dir", str(out)]


def train_command(model, data, out, nproc):
    """``script_args`` as one process, or under ``torchrun --max-restarts 3`` for several."""
    script = script_args(model, data, out, nproc)
    if nproc == 1:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--max-restarts=3", "--monitor-interval=0.2", *script]


def run(cmd, log, fault=None, model=None, out=None):
    """Run ``cmd`` (its own process group) with output to ``log``; with ``fault``, inflict it
    once the run has checkpointed inside its second epoch. Returns (exit code, seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    with open(log, "ab") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        if fault:
            inflict(proc, fault, model, Path(out), Path(log))
        code = proc.wait(timeout=300)
    return code, time.time() - t0


def inflict(proc, fault, model, out, log):
    """Wait for a periodic checkpoint past the first epoch, then SIGKILL the last rank (under
    torchrun) or SIGTERM the whole process group."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        ipe = ITERS_PER_EPOCH[model].search(log.read_text(errors="replace"))
        done = [int(m.group(1)) for p in out.rglob("*") if (m := PERIODIC[model].search(p.name))]
        if ipe and done and max(done) > int(ipe.group(1)):
            break
        time.sleep(0.02)
    else:
        raise RuntimeError(f"the run ended or stalled before a checkpoint in its second epoch (see {log})")
    if fault == "sigterm":
        os.killpg(proc.pid, signal.SIGTERM)
        return
    ranks = worker_ranks(proc.pid)
    os.kill(ranks[max(ranks)], signal.SIGKILL)


def worker_ranks(agent_pid):
    """{rank: pid} of torchrun's worker processes (its direct children)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [e for e in environ if e.startswith(b"RANK=")]
        if ppid == agent_pid and rank:
            ranks[int(rank[0][5:])] = int(entry.name)
    if not ranks:
        raise RuntimeError(f"no torchrun workers found under PID {agent_pid}")
    return ranks


def tensors(obj, prefix=""):
    """Every tensor inside a checkpoint, by its path of keys."""
    import torch

    if torch.is_tensor(obj):
        return {prefix: obj}
    found = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found.update(tensors(value, f"{prefix}/{key}"))
    return found


def compare(model, reference_out, drill_out):
    """(equal, number of tensors, first differing key) of the two runs' final checkpoints."""
    import torch

    from detcore.training.checkpoints import load

    keep = ("model", "model_raw", "optimizer")
    a, b = (tensors({k: load(o / FINAL[model]).get(k) for k in keep}) for o in (reference_out, drill_out))
    differ = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))
    return not differ, len(a), differ[0] if differ else None


def drill(model, fault, nproc, data, out):
    """Both runs and the verdict, as a list of dicts (also what the test suite checks)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ref_out, drill_out = out / "reference", out / "drill"
    records = []
    code, secs = run(train_command(model, data, ref_out, nproc), out / "reference.log")
    records.append({"run": "reference", "model": model, "nproc": nproc, "exit": code, "seconds": round(secs, 1)})
    cmd = train_command(model, data, drill_out, nproc)
    log = out / "drill.log"
    code, secs = run(cmd, log, fault, model, drill_out)
    record = {"run": f"drill ({fault})", "model": model, "nproc": nproc, "exit": code, "seconds": round(secs, 1)}
    if fault == "sigterm":       # the scheduler's job ends; the user re-runs the same command
        record["rerun_exit"], rerun_secs = run(cmd, log)
        record["seconds"] = round(secs + rerun_secs, 1)
    text = log.read_text(errors="replace")
    record["resumed_from"] = re.findall(r"resuming by itself from (\S+)", text)
    record["preempted_line"] = next((ln for ln in text.splitlines() if ln.startswith("preempted:")), None)
    records.append(record)
    equal, count, first = compare(model, ref_out, drill_out)
    records.append({"run": "verdict", "model": model, "fault": fault, "equal": equal, "tensors": count,
                    "first_difference": first})
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("yolox", "ssd"), required=True)
    ap.add_argument("--fault", choices=("sigkill", "sigterm"), required=True)
    ap.add_argument("--nproc", type=int, default=2, help="processes (sigkill needs 2 or more)")
    ap.add_argument("--data", required=True, help="COCO-layout set (tools/make_shapes.py)")
    ap.add_argument("--out", required=True, help="empty folder for the two runs")
    args = ap.parse_args(argv)
    if args.fault == "sigkill" and args.nproc < 2:
        ap.error("--fault sigkill kills one rank of several: --nproc 2 or more")
    try:
        records = drill(args.model, args.fault, args.nproc, args.data, args.out)
    except RuntimeError as exc:       # the run never reached the point of the fault
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for record in records:
        print(json.dumps(record), flush=True)
    return 0 if records[-1]["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
