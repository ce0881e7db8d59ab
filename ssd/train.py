"""Train SSD300-ResNet34 on COCO (MLPerf single_stage_detector recipe, flags as in the reference).

Runs as ``python ssd/train.py --data COCO_ROOT`` (or a Pascal VOC devkit), under ``mpirun -n N``
and under torchrun.
``--checkpoint iter_N.pt`` (weights only) fine-tunes, also on another label count;
``--eval-only --checkpoint FILE`` scores a checkpoint on the val split and stops.
"""
import sys
from pathlib import Path

# Run as a script, Python puts ssd/ first on sys.path, where data.py / model.py would shadow any
# top-level module of the same name; replace it with the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402

import accel  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402
from accel.policy import default_worker_type  # noqa: E402
from detcore.training.early_stop import MetricWatch  # noqa: E402
from detcore.training.mlflow_run import add_mlflow_args, check_args as check_mlflow_args  # noqa: E402
from ssd.engine import SSDRun  # noqa: E402
from ssd.step import REFERENCE_BATCH  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description="Train SSD300-ResNet34 on a COCO or Pascal VOC data set.")
    p.add_argument("--data", "-d", required=True,
                   help="COCO root with train2017/, val2017/, annotations/; or a Pascal VOC devkit "
                        "(VOC2007/, VOC2012/: trains on their trainval, evaluates on VOC2007 test) "
                        "or one VOC<year>/ folder")
    p.add_argument("--allow-empty-train", action="store_true",
                   help="train even when the training split has no box at all (background only)")
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
    p.add_argument("--patience", type=int, default=0, metavar="N",
                   help="stop after N evaluations in a row without improving --best-metric "
                        "(0 = never stop early; the MLPerf status of such a stop stays 'aborted')")
    p.add_argument("--best-metric", default="ap50_95", metavar="{ap50_95,ap50,val_loss}",
                   help="what --patience and ssd300_best.pth follow: COCO mAP (ap50_95), AP50, or the "
                        "validation loss (val_loss, lower is better)")
    p.add_argument("--checkpoint", default=None,
                   help="resume from ssd300_latest.pth (same labels), or start from the weights of an "
                        "iter_N.pt (the reference's or ours; another label count fine-tunes: the "
                        "tensors that do not fit keep their fresh initialisation)")
    p.add_argument("--eval-only", action="store_true",
                   help="score --checkpoint on the val split (COCO summary), then stop: no training, "
                        "no checkpoint written")
    p.add_argument("--analyze", type=int, default=0, metavar="K",
                   help="with --eval-only: draw the K val images with the most errors (missed + false "
                        "detections) into <output-dir>/errors, with per-image counts in errors/per_image.json")
    p.add_argument("--no-save", action="store_true", help="do not write checkpoints")
    p.add_argument("--checkpoint-interval", type=int, default=0, metavar="K",
                   help="also write a checkpoint every K iterations inside an epoch "
                        "(ssd300_iter_NNNNNNNN.pth; 0 = at epoch ends only)")
    p.add_argument("--keep-checkpoints", type=int, default=2, metavar="M",
                   help="keep the newest M of those periodic checkpoints")
    p.add_argument("--output-dir", "--save-dir", dest="output_dir", default="ssd_output",
                   help="checkpoints, models/iter_N.pt, train_log.txt and the MLPerf log go here")
    p.add_argument("--seed", "-s", type=int, default=None, help="random seed (default: drawn at random)")
    p.add_argument("--deterministic", "--det", action="store_true", help="force deterministic algorithms")
    p.add_argument("--batch-splits", type=int, default=1,
                   help="split each batch into N chunks with gradient accumulation (saves memory)")
    p.add_argument("--num-cropping-iterations", type=int, default=1,
                   help="crop trials per drawn IoU choice (MLPerf: 1, the other legal value is 50)")
    p.add_argument("--pretrained-backbone", default=None, metavar="PATH",
                   help="torchvision-format ResNet-34 .pth; 'none' = from scratch; absent = "
                        "torchvision's ImageNet weights from its cache (TORCH_HOME), as the reference")
    p.add_argument("--trainable-backbone-layers", type=int, default=4,
                   help="backbone stages that train, counted from the last (4 = all, the reference; "
                        "0 = the backbone is frozen)")
    p.add_argument("--opt", choices=("sgd", "adamw"), default="sgd",
                   help="optimizer: sgd (momentum 0.9, the reference) or adamw (torch's AdamW, "
                        "decoupled --weight-decay; the shapes demo's choice with a frozen backbone)")
    p.add_argument("--clip-grad-norm", type=float, default=None, metavar="NORM",
                   help="clip the global gradient norm (off in the reference)")
    p.add_argument("--dl-worker-type", choices=("MP", "HABANA"), default=None,
                   help="MP: torch DataLoader; HABANA: Habana's data loader on HPU "
                        "(default: HABANA inside the Habana stack, MP elsewhere)")
    p.add_argument("--encode-in", choices=("main", "workers"), default="main",
                   help="where training targets are encoded: main = batched in the training process "
                        "(faster, see bench/ssd_encode_where.py), workers = per image in the loader "
                        "workers, as the reference")
    p.add_argument("--disable-distributed-validation", action="store_true",
                   help="evaluate on rank 0 only (the MLPerf reference's way)")
    p.add_argument("--iteration", type=int, default=0, help="iteration to start from")
    p.add_argument("--end-iteration", type=int, default=0, help="stop after this iteration (0 = no limit)")
    p.add_argument("--nms-valid-thresh", type=float, default=0.05, help="score threshold before NMS at eval")
    p.add_argument("--use-torch-compile", action="store_true", help="train through torch.compile")
    p.add_argument("--dist-timeout", type=float, default=accel.distributed.DEFAULT_TIMEOUT_S,
                   help="seconds any collective may wait for a rank before the run stops")
    p.add_argument("--logger", "-l", choices=("loguru", "tensorboard", "mlflow"), default="loguru",
                   help="also write TensorBoard scalars to OUTPUT/tensorboard (pip install tensorboard), or log "
                        "params, metrics and artifacts to MLflow (pip install mlflow)")
    add_mlflow_args(p)
    p.add_argument("--no-cuda", action="store_true", help="the MLPerf reference's spelling of --device cpu")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                   help="accepted for torch.distributed.launch; the rank comes from the environment")
    accel.add_device_args(p)
    accel.add_precision_args(p)
    # SSD's recipe runs HPU autocast with the bridge's default op lists; the repo-top lists are
    # YOLOX's and are exported only when --hmp-bf16/--hmp-fp32 name files
    p.set_defaults(model_op_lists=False)
    return p


def check_args(args):
    """Reject flag values the run cannot honour, naming the flag."""
    positive = ("batch_size", "epochs", "val_interval", "log_interval", "batch_splits",
                "num_cropping_iterations")
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
    if args.dist_timeout <= 0:
        raise UserError(f"--dist-timeout must be > 0 seconds (got {args.dist_timeout})")
    if not 0 <= args.trainable_backbone_layers <= 4:
        raise UserError(f"--trainable-backbone-layers must be 0..4 (got {args.trainable_backbone_layers})")
    MetricWatch(args.best_metric, args.patience, names=("--best-metric", "--patience"))  # one line if bad
    check_mlflow_args(args)
    if args.register and args.no_save:
        raise UserError(f"--register {args.register} exports the run's best checkpoint: drop --no-save")
    if args.clip_grad_norm is not None and args.clip_grad_norm <= 0:
        raise UserError(f"--clip-grad-norm must be > 0 (got {args.clip_grad_norm})")
    if args.no_cuda:
        if args.device not in (None, "auto", "cpu") or args.use_hpu:
            raise UserError("--no-cuda conflicts with the device asked for (it means --device cpu)")
        args.device = "cpu"
    if args.analyze < 0 or (args.analyze and not args.eval_only):
        raise UserError(f"--analyze {args.analyze}: expected a number of images >= 0, with --eval-only")
    if args.eval_only and not args.checkpoint:
        raise UserError("--eval-only needs --checkpoint FILE (ssd300_latest.pth or models/iter_N.pt)")
    if args.dl_worker_type is None:
        args.dl_worker_type = default_worker_type()


@cli_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    run = SSDRun(args)
    if args.eval_only:
        run.evaluate_only()
    else:
        run.fit()
    # on success only: a failed collective leaves a group whose teardown can abort the process
    # before cli_entry has printed its one line; the exit releases everything anyway
    accel.destroy()


if __name__ == "__main__":
    main()
