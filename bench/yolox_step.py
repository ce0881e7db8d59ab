"""YOLOX training-step benchmark (forward + loss + backward + SGD step) on CPU, or on CUDA with
``--device cuda`` (what bench/gpu_check.sh runs; fp16 + GradScaler is a mode there).

Prints one JSON line per (precision, GT count): median step time, img/s, and the fraction of the
device's matmul rate (measured in the same run) that the step reaches, counting training as 3x the
26.8 GFLOPs forward of YOLOX-S at 640. ``--compare`` also times the released YOLOX on the same
weights and inputs (REF_PYTHON: a virtualenv with ``yolox==0.3.0``) and prints the ratio.
"""
import argparse
import json
import os
import subprocess
import tempfile

import torch

from common import ROOT, STEP_WARMUP, add_device_arg, emit, machine, matmul_flops, profile_ops, time_median

from accel import Precision, synchronize  # noqa: E402  (common.py put the repo on sys.path)
from accel.policy import compile_model  # noqa: E402
from yolox.exp import get_exp  # noqa: E402

GFLOPS_FWD_640 = {"yolox-s": 26.8}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}   # matmul ceiling per mode


def make_batch(batch, size, gts, num_classes, seed=0):
    """Images plus ``gts`` random boxes per image in the (cls, cx, cy, w, h) pixel format."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    wh = 16 + torch.rand(batch, gts, 2, generator=g) * (size / 3)
    cxy = wh / 2 + torch.rand(batch, gts, 2, generator=g) * (size - wh)
    cls = torch.randint(0, num_classes, (batch, gts, 1), generator=g).float()
    return images, torch.cat([cls, cxy, wh], dim=2)


def layout(model, images, channels_last):
    """Model and images in the memory format the trainer would use."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(memory_format=fmt), images.contiguous(memory_format=fmt)


def bench_ours(model, images, targets, mode, repeat, channels_last, device="cpu", compiled=False):
    """Median step seconds, the first step's loss and the first step's seconds (with ``compiled``:
    the trainer's ``compile_model`` wrapper, so that first step includes the compilation)."""
    prec = Precision(torch.device(device), mode=mode)
    model, images = layout(model.to(device), images.to(device), channels_last)
    targets = targets.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    forward = compile_model(model, device) if compiled else model
    losses, first = [], []

    def run():
        with prec.autocast():
            out = forward(images, targets)
        opt.zero_grad(set_to_none=True)
        prec.backward_and_step(out["total_loss"], opt)
        losses.append(out["total_loss"].detach())

    secs = time_median(run, repeat=repeat, warmup=STEP_WARMUP, sync=lambda: synchronize(device), first=first)
    return secs, float(losses[0]), first[0]


def profile_step(model, images, targets, mode, top, channels_last, compiled=False):
    """One step under torch.profiler: the ``top`` ops by self CPU time, as JSON lines. With
    ``compiled``, the trainer's compiled model (``main`` has made inductor name its kernels)."""
    prec = Precision(torch.device("cpu"), mode=mode)
    model, images = layout(model, images, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    forward = compile_model(model, "cpu") if compiled else model

    def step():
        with prec.autocast():
            out = forward(images, targets)
        opt.zero_grad(set_to_none=True)
        prec.backward_and_step(out["total_loss"], opt)

    bench = "yolox_step_compiled_profile" if compiled else "yolox_step_profile"
    profile_ops(step, top, bench=bench, mode=mode)


def bench_reference(ref_python, name, state_dict, images, targets, repeat, source_dir=None):
    """The reference's own step in REF_PYTHON (the released 0.3.0 there); with ``source_dir``, the
    ``yolox`` package found in that folder instead (an upstream checkout, e.g. HEAD), put first on
    its path."""
    env = dict(os.environ, PYTHONPATH=str(source_dir)) if source_dir else None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.pt")
        torch.save({"name": name, "state_dict": state_dict, "images": images, "targets": targets,
                    "repeat": repeat}, path)
        proc = subprocess.run([ref_python, str(ROOT / "bench" / "ref_runner.py"), "step", path,
                               str(torch.get_num_threads())],
                              capture_output=True, text=True, cwd=tmp, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default="yolox-s")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--gts", default="5,50")
    ap.add_argument("--modes", default="fp32,bf16", help="comma list of fp32, bf16, fp16 (cuda only)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--contiguous", action="store_true",
                    help="NCHW layout instead of channels_last (the trainer's default on cpu/cuda)")
    ap.add_argument("--compare", action="store_true", help="also time the released YOLOX")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print the top N ops of one step per precision (torch.profiler); with "
                         "--compile, of the compiled step too (inductor's kernels by name)")
    ap.add_argument("--head-dir", default=os.environ.get("REF_HEAD_DIR", "/work/ref_compare/yolox_head"),
                    help="with --compare, also time the upstream YOLOX in this folder (its yolox/ package; "
                         "bench/README.md: how to extract HEAD) when it exists")
    ap.add_argument("--compile", action="store_true",
                    help="also time each mode through torch.compile (the trainer's --use-torch-compile); "
                         "the first compiled step, compilation included, is reported apart as compile_s")
    ap.add_argument("--ref-python", default=os.environ.get("REF_PYTHON", "/work/ref_compare/venv/bin/python"))
    add_device_arg(ap)
    args = ap.parse_args()
    if args.device != "cpu" and (args.compare or args.profile):
        # the reference runner and the CPU-time profile measure the CPU only
        ap.error("--compare and --profile run with --device cpu only")

    if args.compile and args.profile:
        # inductor's generated kernels each under their own name in the profile, so that a fused
        # kernel slower than eager's ops shows; set before the first compilation, since a graph
        # compiled (or cached) without it shows as one opaque "Call CompiledFxGraph"
        import torch._inductor.config as inductor_config
        inductor_config.cpp.enable_kernel_profile = True
    modes = args.modes.split(",")
    if set(modes) - set(DTYPES):
        ap.error(f"--modes {args.modes}: each mode must be one of {', '.join(DTYPES)}")
    if "fp16" in modes and args.device != "cuda":
        ap.error("--modes fp16 (autocast + GradScaler) needs --device cuda")
    rates = {mode: matmul_flops(DTYPES[mode], device=args.device, n=8192 if args.device == "cuda" else 2048,
                                sync=lambda: synchronize(args.device))
             for mode in dict.fromkeys(["fp32", *modes])}
    emit(bench="matmul", **machine(args.device), **{f"{m}_gflops": r / 1e9 for m, r in rates.items()})
    torch.manual_seed(0)
    exp = get_exp(None, args.name)
    base = exp.get_model()
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def fresh_model():
        """The same initial weights for every timed model, in training mode."""
        model = exp.get_model()
        model.load_state_dict(state)
        return model.train()
    train_flops = 3 * GFLOPS_FWD_640.get(args.name, float("nan")) * 1e9 * (args.size / 640) ** 2
    fp32_loss = {}
    for gts in [int(x) for x in args.gts.split(",")]:
        images, targets = make_batch(args.batch, args.size, gts, exp.num_classes)
        for mode in modes:
            model = fresh_model()
            secs, loss, _ = bench_ours(model, images, targets, mode, args.repeat, not args.contiguous,
                                       args.device)
            row = dict(bench="yolox_step", model=args.name, device=args.device, batch=args.batch,
                       size=args.size, gts=gts,
                       mode=mode, channels_last=not args.contiguous, step_s=round(secs, 4),
                       img_s=round(args.batch / secs, 3), first_loss=loss,
                       matmul_fraction=round(train_flops * args.batch / secs / rates[mode], 3))
            if mode == "fp32":
                fp32_loss[gts] = (loss, secs)
            elif gts in fp32_loss:
                ref_loss, ref_secs = fp32_loss[gts]
                row.update(speedup_vs_fp32=round(ref_secs / secs, 3),
                           loss_rel_diff_vs_fp32=abs(loss - ref_loss) / abs(ref_loss))
            if args.compare and mode == "fp32":
                ref = bench_reference(args.ref_python, args.name, state, images, targets, args.repeat)
                row.update(ref_step_s=round(ref["secs"], 4), speedup_vs_ref=round(ref["secs"] / secs, 3),
                           ref_first_loss=ref["first_loss"])
                if os.path.isdir(os.path.join(args.head_dir, "yolox")):
                    head = bench_reference(args.ref_python, args.name, state, images, targets, args.repeat,
                                           source_dir=args.head_dir)
                    row.update(head_step_s=round(head["secs"], 4), speedup_vs_head=round(head["secs"] / secs, 3),
                               head_first_loss=head["first_loss"], head_source=head["source"])
            emit(**row)
            if args.compile:
                c_secs, c_loss, compile_s = bench_ours(fresh_model(), images, targets, mode, args.repeat,
                                                       not args.contiguous, args.device, compiled=True)
                emit(bench="yolox_step_compiled", model=args.name, device=args.device, batch=args.batch, size=args.size,
                     gts=gts, mode=mode, channels_last=not args.contiguous,
                     step_s=round(c_secs, 4), img_s=round(args.batch / c_secs, 3), compile_s=round(compile_s, 1),
                     speedup_vs_eager=round(secs / c_secs, 3), first_loss=c_loss,
                     loss_rel_diff_vs_eager=abs(c_loss - loss) / abs(loss))
            if args.profile and gts == max(int(x) for x in args.gts.split(",")):
                model.load_state_dict(state)
                profile_step(model, images, targets, mode, args.profile, not args.contiguous)
                if args.compile:
                    model.load_state_dict(state)
                    profile_step(model, images, targets, mode, args.profile, not args.contiguous,
                                 compiled=True)


if __name__ == "__main__":
    main()
