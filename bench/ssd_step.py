"""SSD-ResNet34 training step (batched encode + forward + loss + backward + SGD) at 300x300 on CPU,
fp32 and bf16 autocast; median of ``--repeat`` steps after a warm-up. ``--device cuda`` runs it on
the GPU (what bench/gpu_check.sh runs; fp16 + GradScaler is a mode there): the encoder stays on the
host and its targets are copied over, as ssd/engine.py's TrainStep does with the loader's boxes."""
import argparse

import torch

from common import add_device_arg, emit, machine, time_median

from accel import Precision, synchronize  # noqa: E402
from ssd import SSD300, Encoder, Loss, dboxes300_coco  # noqa: E402


def make_batch(batch, gts, num_labels, seed=0):
    """Images and ``gts`` random ltrb boxes in [0,1] per image, labels 1..num_labels-1."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 300, 300, generator=g)
    wh = 0.05 + torch.rand(batch, gts, 2, generator=g) * 0.4
    lt = torch.rand(batch, gts, 2, generator=g) * (1 - wh)
    labels = torch.randint(1, num_labels, (batch, gts), generator=g)
    return images, torch.cat([lt, lt + wh], dim=2), labels


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gts", type=int, default=10)
    ap.add_argument("--modes", default="fp32,bf16", help="comma list of fp32, bf16, fp16 (cuda only)")
    ap.add_argument("--repeat", type=int, default=3)
    add_device_arg(ap)
    args = ap.parse_args()
    if "fp16" in args.modes.split(",") and args.device != "cuda":
        ap.error("--modes fp16 (autocast + GradScaler) needs --device cuda")
    device = torch.device(args.device)
    emit(bench="ssd_machine", **machine(device))
    dboxes = dboxes300_coco()
    encoder, loss_fn = Encoder(dboxes), Loss(dboxes).to(device)
    images, boxes, labels = make_batch(args.batch, args.gts, 81)
    images = images.to(device)
    torch.manual_seed(0)
    state = SSD300(label_num=81).state_dict()
    fp32 = None
    for mode in args.modes.split(","):
        model = SSD300(label_num=81)
        model.load_state_dict(state)
        model.to(device).train()
        prec = Precision(device, mode=mode)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        losses = []

        def step():
            gloc, glabel = encoder.encode_batch(boxes, labels)
            gloc, glabel = gloc.to(device, non_blocking=True), glabel.to(device, non_blocking=True)
            with prec.autocast():
                ploc, plabel = model(images)
                loss = loss_fn(ploc, plabel, gloc.transpose(1, 2), glabel)
            opt.zero_grad(set_to_none=True)
            prec.backward_and_step(loss, opt)
            losses.append(loss.detach())

        secs = time_median(step, repeat=args.repeat, sync=lambda: synchronize(device))
        row = dict(bench="ssd_step", device=args.device, batch=args.batch, gts=args.gts, mode=mode,
                   step_s=round(secs, 4), img_s=round(args.batch / secs, 3), first_loss=float(losses[0]))
        if fp32 is None:
            fp32 = (secs, float(losses[0]))
        else:
            row.update(speedup_vs_fp32=round(fp32[0] / secs, 3),
                       loss_rel_diff_vs_fp32=abs(float(losses[0]) - fp32[1]) / abs(fp32[1]))
        emit(**row)


if __name__ == "__main__":
    main()
