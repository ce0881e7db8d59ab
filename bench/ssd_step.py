"""SSD-ResNet34 training step (batched encode + forward + loss + backward + SGD) at 300x300 on CPU,
fp32 and bf16 autocast; median of ``--repeat`` steps after a warm-up. The step is the trainer's own
``ssd.step.TrainStep`` (SGD with momentum 0.9 and weight decay, as ssd/train.py builds it), so the
bench measures what training runs. ``--device cuda`` runs it on the GPU (what bench/gpu_check.sh
runs; fp16 + GradScaler is a mode there): the encoder stays on the host and its targets are copied
over, as TrainStep does with the loader's boxes.

``--compare`` (CPU) also times the MLPerf reference's own step (REF_SSD_DIR, default
/work/ref_compare/mlperf_ssd; see bench/get_mlperf_ssd.sh) through bench/ssd_ref_runner.py: its
SSD300, per-image encoding and Loss, fp32, on the same weights, images and boxes, and adds the
ratio and both first-step losses (same weights and batch, so they must agree closely) to the fp32
row.
"""
import argparse

import torch

from common import (REF_SSD_DIR, STEP_WARMUP, add_device_arg, emit, has_mlperf_ssd, machine, profile_ops,
                    run_mlperf_ssd, time_median)

from accel import Precision, synchronize  # noqa: E402
from accel.policy import compile_model  # noqa: E402
from ssd import SSD300, Encoder, Loss, dboxes300_coco  # noqa: E402
from ssd.step import TrainStep, place_model  # noqa: E402

MOMENTUM = 0.9     # ssd/step.py's SGD, the reference's too


def make_batch(batch, gts, num_labels, seed=0):
    """Images and ``gts`` random ltrb boxes in [0,1] per image, labels 1..num_labels-1."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 300, 300, generator=g)
    wh = 0.05 + torch.rand(batch, gts, 2, generator=g) * 0.4
    lt = torch.rand(batch, gts, 2, generator=g) * (1 - wh)
    labels = torch.randint(1, num_labels, (batch, gts), generator=g)
    return images, torch.cat([lt, lt + wh], dim=2), labels


def smoke_or_timed(repeat):
    """``time_median``'s warm-up and repeat counts: ``--repeat 0`` times the warm-up step alone
    (a smoke check of the code path on a busy machine, not a measurement)."""
    return dict(warmup=STEP_WARMUP, repeat=repeat) if repeat > 0 else dict(warmup=0, repeat=1)


def train_step(state, mode, args, device, compiled=False):
    """The trainer's ``TrainStep`` on a model holding ``state`` (through ``compile_model`` with
    ``compiled``), with ssd/train.py's SGD."""
    dboxes = dboxes300_coco()
    model = SSD300(label_num=81)
    model.load_state_dict(state)
    place_model(model, device).train()   # the trainer's layout: channels_last on cpu/cuda
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, weight_decay=args.weight_decay)
    step = TrainStep(compile_model(model, device) if compiled else model, Loss(dboxes).to(device),
                     Encoder(dboxes), opt, Precision(device, mode=mode), device, 1)
    return step


def bench_ours(state, images, boxes, labels, mode, args, device, compiled=False):
    """Median seconds of ``TrainStep``, the warm-up step's loss (taken on ``state``'s weights) and
    its seconds (with ``compiled``, the trainer's ``compile_model`` wrapper: compilation included)."""
    step = train_step(state, mode, args, device, compiled)
    losses, first = [], []
    secs = time_median(lambda: losses.append(step(images, boxes, labels, args.lr)), **smoke_or_timed(args.repeat),
                       sync=lambda: synchronize(device), first=first)
    return secs, float(losses[0]), first[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gts", type=int, default=10)
    ap.add_argument("--modes", default="fp32,bf16", help="comma list of fp32, bf16, fp16 (cuda only)")
    ap.add_argument("--repeat", type=int, default=3, help="timed steps after a warm-up step (0: one step, smoke)")
    ap.add_argument("--lr", type=float, default=2.5e-3, help="ssd/train.py's default")
    ap.add_argument("--weight-decay", type=float, default=5e-4, help="ssd/train.py's default")
    ap.add_argument("--compare", action="store_true",
                    help="also time the MLPerf reference's step in fp32 (REF_SSD_DIR)")
    ap.add_argument("--compile", action="store_true",
                    help="also time each mode through torch.compile (ssd/train.py --use-torch-compile); "
                         "the first compiled step, compilation included, is reported apart as compile_s")
    ap.add_argument("--ref-dir", default=REF_SSD_DIR, help="the extracted MLPerf SSD reference")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print the top N ops of one eager step per precision (torch.profiler, cpu)")
    add_device_arg(ap)
    args = ap.parse_args()
    modes = args.modes.split(",")
    if "fp16" in modes and args.device != "cuda":
        ap.error("--modes fp16 (autocast + GradScaler) needs --device cuda")
    if (args.compare or args.profile) and args.device != "cpu":
        ap.error("--compare and --profile run with --device cpu only (the reference step and the profile "
                 "measure the CPU)")
    if args.compare and not has_mlperf_ssd(args.ref_dir):
        ap.error(f"--compare: {args.ref_dir} has no ssd300.py (run bash bench/get_mlperf_ssd.sh)")
    device = torch.device(args.device)
    emit(bench="ssd_machine", **machine(device))
    images, boxes, labels = make_batch(args.batch, args.gts, 81)
    images = images.to(device)
    torch.manual_seed(0)
    state = SSD300(label_num=81).state_dict()
    fp32 = None
    for mode in modes:
        secs, loss, _ = bench_ours(state, images, boxes, labels, mode, args, device)
        row = dict(bench="ssd_step", device=args.device, batch=args.batch, gts=args.gts, mode=mode,
                   step_s=round(secs, 4), img_s=round(args.batch / secs, 3), first_loss=loss)
        if fp32 is None:
            fp32 = (secs, loss)
        else:
            row.update(speedup_vs_fp32=round(fp32[0] / secs, 3),
                       loss_rel_diff_vs_fp32=abs(loss - fp32[1]) / abs(fp32[1]))
        if args.compare and mode == "fp32":
            ref, _ = run_mlperf_ssd(args.ref_dir, "step", {
                "state_dict": state, "images": images.cpu(), "boxes": boxes, "labels": labels, "label_num": 81,
                "repeat": args.repeat, "warmup": STEP_WARMUP, "lr": args.lr, "momentum": MOMENTUM,
                "weight_decay": args.weight_decay})
            row.update(ref_step_s=round(ref["secs"], 4), ref_img_s=round(args.batch / ref["secs"], 3),
                       ref_encode_s=round(ref["encode_secs"], 4), speedup_vs_ref=round(ref["secs"] / secs, 3),
                       ref_first_loss=ref["first_loss"],
                       first_loss_rel_diff_vs_ref=abs(loss - ref["first_loss"]) / abs(ref["first_loss"]))
        emit(**row)
        if args.profile:
            step = train_step(state, mode, args, device)
            profile_ops(lambda: step(images, boxes, labels, args.lr), args.profile,
                        bench="ssd_step_profile", mode=mode)
        if args.compile:
            c_secs, c_loss, compile_s = bench_ours(state, images, boxes, labels, mode, args, device, compiled=True)
            emit(bench="ssd_step_compiled", device=args.device, batch=args.batch, gts=args.gts, mode=mode,
                 step_s=round(c_secs, 4), img_s=round(args.batch / c_secs, 3), compile_s=round(compile_s, 1),
                 speedup_vs_eager=round(secs / c_secs, 3), first_loss=c_loss,
                 loss_rel_diff_vs_eager=abs(c_loss - loss) / abs(loss))


if __name__ == "__main__":
    main()
