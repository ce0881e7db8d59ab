"""Train SSD300-ResNet34 on COCO (MLPerf single_stage_detector recipe, flags as in the reference).

Runs as ``python ssd/train.py --data COCO_ROOT``, under ``mpirun -n N`` and under torchrun.
"""
import sys
from pathlib import Path

# Run as a script, Python puts ssd/ first on sys.path, where data.py / model.py would shadow any
# top-level module of the same name; replace it with the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mlperf_logging.mllog import constants as C  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import accel  # noqa: E402
from accel import checkpoint  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402
from ssd import SSD300, Encoder, Loss, dboxes300_coco  # noqa: E402
from ssd.data import CocoDetection, EpochSampler, coco_paths, collate  # noqa: E402
from ssd.evaluate import evaluate  # noqa: E402
from ssd.mlperf_log import MLPerfLogger  # noqa: E402

REFERENCE_BATCH = 32
CHECKPOINT_NAME = "ssd300_latest.pth"
MLPERF_LOG_NAME = "mlperf_ssd.log"


def build_parser():
    p = argparse.ArgumentParser(description="Train SSD300-ResNet34 on a COCO-format data set.")
    p.add_argument("--data", "-d", required=True, help="COCO root with train2017/, val2017/, annotations/")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="per-process batch size")
    p.add_argument("--val-batch-size", type=int, default=None, help="per-process eval batch (default: --batch-size)")
    p.add_argument("--epochs", "-e", type=int, default=800, help="maximum number of epochs")
    p.add_argument("--lr", type=float, default=2.5e-3,
                   help=f"base learning rate for a global batch of {REFERENCE_BATCH} (scaled linearly)")
    p.add_argument("--weight-decay", "--wd", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=None, help="warm-up length as a fraction of epochs")
    p.add_argument("--warmup-factor", type=int, default=0, help="MLPerf warm-up curve: starts at lr*(1-1/2**f)")
    p.add_argument("--lr-decay-schedule", type=int, nargs="+", default=[40, 50],
                   help="epochs at which the learning rate is multiplied by 0.1")
    p.add_argument("--val-interval", type=int, default=5, help="evaluate every N epochs")
    p.add_argument("--val-epochs", type=int, nargs="*", default=[], help="also evaluate after these epochs")
    p.add_argument("--log-interval", type=int, default=100, help="print the loss every N iterations")
    p.add_argument("--num-workers", type=int, default=4, help="data loader worker processes")
    p.add_argument("--threshold", "-t", type=float, default=0.23, help="stop once COCO mAP reaches this")
    p.add_argument("--checkpoint", default=None, help="resume from this checkpoint (.pth)")
    p.add_argument("--no-save", action="store_true", help="do not write checkpoints")
    p.add_argument("--output-dir", "--save-dir", dest="output_dir", default="ssd_output",
                   help="checkpoints and the MLPerf log go here")
    p.add_argument("--seed", "-s", type=int, default=None, help="random seed (default: drawn at random)")
    p.add_argument("--deterministic", action="store_true", help="force deterministic algorithms")
    p.add_argument("--batch-splits", type=int, default=1,
                   help="split each batch into N chunks with gradient accumulation (saves memory)")
    p.add_argument("--pretrained-backbone", default=None, metavar="PATH",
                   help="torchvision-format ResNet-34 .pth (no download; absent = from scratch)")
    p.add_argument("--dl-worker-type", choices=("MP", "HABANA"), default="MP",
                   help="MP: torch DataLoader; HABANA: habana_dataloader.HabanaDataLoader")
    p.add_argument("--iteration", type=int, default=0, help="iteration to start from")
    p.add_argument("--end-iteration", type=int, default=0, help="stop after this iteration (0 = no limit)")
    p.add_argument("--nms-valid-thresh", type=float, default=0.05, help="score threshold before NMS at eval")
    p.add_argument("--use-torch-compile", action="store_true", help="train through torch.compile")
    accel.add_device_args(p)
    accel.add_precision_args(p)
    return p


def check_args(args):
    """Reject flag values the run cannot honour, naming the flag."""
    positive = ("batch_size", "epochs", "val_interval", "log_interval", "batch_splits")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.val_batch_size is not None and args.val_batch_size < 1:
        raise UserError(f"--val-batch-size must be >= 1 (got {args.val_batch_size})")
    if args.batch_size % args.batch_splits:
        raise UserError(f"--batch-splits {args.batch_splits} must divide --batch-size {args.batch_size}")
    for name in ("num_workers", "iteration", "end_iteration", "warmup_factor"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(args, name)})")
    if args.lr <= 0 or args.weight_decay < 0:
        raise UserError(f"--lr must be > 0 and --weight-decay >= 0 (got {args.lr}, {args.weight_decay})")
    if args.warmup is not None and args.warmup < 0:
        raise UserError(f"--warmup must be a non-negative fraction of epochs (got {args.warmup})")


def learning_rate(iteration, base_lr, warmup_iters, warmup_factor, boundaries):
    """MLPerf SSD schedule: linear warm-up ending at ``base_lr``, then x0.1 at each boundary iteration."""
    if iteration < warmup_iters:
        return base_lr - (warmup_iters - iteration) * base_lr / (warmup_iters * 2 ** warmup_factor)
    return base_lr * 0.1 ** sum(iteration >= b for b in boundaries)


def seed_everything(seed, deterministic):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def loader_class(worker_type):
    """torch DataLoader, or Habana's drop-in loader (only inside the Habana software stack)."""
    if worker_type == "MP":
        return DataLoader
    try:
        import habana_dataloader
    except ImportError:
        raise UserError("--dl-worker-type HABANA needs the habana_dataloader package (Habana docker "
                        "image); use --dl-worker-type MP elsewhere") from None
    return habana_dataloader.HabanaDataLoader


def make_loaders(args, train_set, val_set, info, seed, device):
    cls = loader_class(args.dl_worker_type)
    sampler = EpochSampler(len(train_set), args.batch_size, info.rank, info.world_size, seed)
    if sampler.batches_per_epoch == 0:
        raise UserError(f"--batch-size {args.batch_size} x {info.world_size} process(es) is larger than "
                        f"the {len(train_set)} training images")
    common = dict(collate_fn=collate, num_workers=args.num_workers, pin_memory=device.type == "cuda")
    train_loader = cls(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True, **common)
    val_shard = list(range(info.rank, len(val_set), info.world_size))
    val_loader = cls(val_set, batch_size=args.val_batch_size or args.batch_size, sampler=val_shard, **common)
    return sampler, train_loader, val_loader


def resume(path, model, optimizer, precision):
    """Restore model / optimizer / grad-scaler state; returns the iteration to continue from."""
    state = checkpoint.load(path)
    if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
        raise UserError(f"--checkpoint {path}: not an ssd/train.py checkpoint (needs 'model' and 'iteration')")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"--checkpoint {path}: does not fit this model ({str(exc).splitlines()[0]})") from None
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    precision.load_state_dict(state.get("precision", {}))
    return int(state["iteration"])


def save(path, model, optimizer, precision, epoch, iteration):
    checkpoint.save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "precision": precision.state_dict(), "epoch": epoch, "iteration": iteration},
                           path)


class Trainer:
    """One optimisation step over a (possibly split) batch: encode, forward, loss, backward, step."""

    def __init__(self, model, loss_fn, encoder, optimizer, precision, device, splits):
        self.model, self.loss_fn, self.encoder = model, loss_fn, encoder
        self.optimizer, self.precision, self.device, self.splits = optimizer, precision, device, splits

    def step(self, imgs, boxes, labels, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        gloc, glabel = self.encoder.encode_batch(boxes, labels)
        gloc = gloc.transpose(1, 2).contiguous()
        total = torch.zeros((), device=self.device)
        chunks = zip(imgs.chunk(self.splits), gloc.chunk(self.splits), glabel.chunk(self.splits))
        for k, (img, loc, lab) in enumerate(chunks):
            last = k == self.splits - 1
            no_sync = getattr(self.model, "no_sync", None)
            with (no_sync() if no_sync and not last else contextlib.nullcontext()):
                with self.precision.autocast():
                    ploc, plabel = self.model(img.to(self.device, non_blocking=True))
                loss = self.loss_fn(ploc.float(), plabel.float(), loc.to(self.device, non_blocking=True),
                                    lab.to(self.device, non_blocking=True)) / self.splits
                self.precision.backward(loss)
            total = total + loss.detach()
        self.precision.step(self.optimizer)
        return total


@cli_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    device = accel.resolve_device(args)
    info = accel.init_distributed(device)
    rank0 = accel.is_main_process()
    say = print if rank0 else (lambda *a, **k: None)
    out_dir = Path(args.output_dir)
    mlog = MLPerfLogger(out_dir / MLPERF_LOG_NAME if rank0 else None, enabled=rank0)
    mlog.event(C.CACHE_CLEAR, True)
    mlog.start(C.INIT_START)
    mlog.submission_info(platform=f"{info.world_size}x{device.type}")

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 31)
    seed = accel.broadcast_object(seed)
    seed_everything(seed, args.deterministic)

    train_dir, train_ann, val_dir, val_ann = coco_paths(args.data)
    train_set = CocoDetection(train_dir, train_ann, train=True, seed=seed)
    val_set = CocoDetection(val_dir, val_ann, train=False)
    if val_set.cat_ids != train_set.cat_ids:
        raise UserError(f"--data: {val_ann} and {train_ann} list different categories")
    sampler, train_loader, val_loader = make_loaders(args, train_set, val_set, info, seed, device)

    if args.pretrained_backbone is None:
        say("no --pretrained-backbone given: the ResNet-34 backbone starts from scratch")
    model = SSD300(label_num=train_set.num_classes, backbone_path=args.pretrained_backbone).to(device)
    dboxes = dboxes300_coco()
    encoder, loss_fn = Encoder(dboxes), Loss(dboxes).to(device)
    global_batch = args.batch_size * info.world_size
    base_lr = args.lr * global_batch / REFERENCE_BATCH
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=args.weight_decay)
    precision = accel.Precision.from_args(args, device)
    iteration = args.iteration
    if args.checkpoint:
        iteration = resume(args.checkpoint, model, optimizer, precision)
        say(f"resumed from {args.checkpoint} at iteration {iteration}")
    net = model  # the bare module: checkpoints and eval bypass DDP / torch.compile
    model = accel.wrap_ddp(model, device)
    if args.use_torch_compile:
        model = torch.compile(model, backend="hpu_backend" if accel.is_hpu(device) else "inductor")
    trainer = Trainer(model, loss_fn, encoder, optimizer, precision, device, args.batch_splits)

    iters_per_epoch = sampler.batches_per_epoch
    warmup_iters = int(args.warmup * iters_per_epoch) if args.warmup else 0
    boundaries = [e * iters_per_epoch for e in args.lr_decay_schedule]
    mlog.hyperparameters(
        seed=seed, global_batch_size=global_batch, local_bn_batch=args.batch_size // args.batch_splits,
        accumulation_steps=args.batch_splits, train_samples=len(train_set), eval_samples=len(val_set),
        base_lr=base_lr, weight_decay=args.weight_decay, warmup_steps=warmup_iters,
        warmup_factor=args.warmup_factor, decay_boundary_epochs=args.lr_decay_schedule, decay_factor=0.1)
    mlog.end(C.INIT_STOP)
    mlog.start(C.RUN_START)
    say(f"{len(train_set)} train / {len(val_set)} val images, {train_set.num_classes - 1} classes, "
        f"{info.world_size} process(es) x batch {args.batch_size}, {iters_per_epoch} iterations/epoch, "
        f"lr {base_lr:.4g}, device {device}")

    status, start_time, start_iter = C.ABORTED, time.time(), iteration
    end = args.end_iteration or math.inf
    for epoch in range(iteration // iters_per_epoch, args.epochs):
        if iteration >= end:
            break
        mlog.start(C.EPOCH_START, metadata={C.EPOCH_NUM: epoch + 1})
        sampler.set_epoch(epoch, iteration - epoch * iters_per_epoch)
        train_set.epoch = epoch
        model.train()
        for imgs, boxes, labels, _, _ in train_loader:
            lr = learning_rate(iteration, base_lr, warmup_iters, args.warmup_factor, boundaries)
            loss = trainer.step(imgs, boxes, labels, lr)
            iteration += 1
            if iteration % args.log_interval == 0:
                say(f"iteration {iteration} epoch {epoch + 1} loss {loss.item():.4f} lr {lr:.4g}", flush=True)
            if iteration >= end:
                break
        mlog.end(C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch + 1})
        epoch_done = iteration == (epoch + 1) * iters_per_epoch
        if rank0 and not args.no_save:
            save(out_dir / CHECKPOINT_NAME, net, optimizer, precision, epoch + 1 if epoch_done else epoch,
                 iteration)
        if epoch_done and ((epoch + 1) % args.val_interval == 0 or epoch + 1 in args.val_epochs):
            mlog.start(C.EVAL_START, metadata={C.EPOCH_NUM: epoch + 1})
            mean_ap = evaluate(net, val_loader, encoder, val_set, device, args.nms_valid_thresh, precision)
            mlog.event(C.EVAL_ACCURACY, mean_ap, metadata={C.EPOCH_NUM: epoch + 1})
            mlog.end(C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch + 1})
            say(f"epoch {epoch + 1}: COCO mAP {mean_ap:.4f} (target {args.threshold})", flush=True)
            if mean_ap >= args.threshold:
                status = C.SUCCESS
                break
    mlog.end(C.RUN_STOP, metadata={C.STATUS: status})
    accel.synchronize(device)
    done = iteration - start_iter
    elapsed = time.time() - start_time
    say(f"finished at iteration {iteration} ({status}): {done} iterations in {elapsed:.1f} s, "
        f"{done * global_batch / max(elapsed, 1e-9):.2f} images/s")
    if rank0 and not args.no_save:
        say(f"checkpoint: {out_dir / CHECKPOINT_NAME}")
    accel.destroy()


if __name__ == "__main__":
    main()
