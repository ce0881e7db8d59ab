"""Evaluate a YOLOX checkpoint with pycocotools:
python -m yolox.tools.eval -n yolox-s -c CKPT -b 8 --data_dir DIR [--conf 0.001 --nms 0.65 --tsize 640 --fuse]

Prints the 12-line COCO summary, the per-class table (images, instances, P, R at the max-mean-F1
confidence, AP50, AP50:95) and a final ``AP50: x`` line; writes results_per_class.csv,
confusion_matrix.csv and the plots into <output_dir>/<experiment>/ (``--no-plots``: the csv
only), and with ``--analyze K`` the K images with the most errors into its ``errors/`` folder.
Also ``python tools/eval.py ...`` in a checkout and the ``detkit-eval`` console script.
"""
import argparse
import sys
from pathlib import Path

from loguru import logger

from accel import (Precision, add_device_args, add_precision_args, destroy,
                   init_distributed, is_main_process, launch_local, resolve_device)
from accel.errors import UserError, cli_entry
from yolox.core.cli import build_exp, load_model
from yolox.core.options import ArgParser, add_exp_args
from detcore.data.check import labels_folder
from detcore.evaluation import report as eval_report
from detcore.training.log import setup_logger


def make_parser():
    parser = ArgParser("eval.py", description="YOLOX COCO evaluation")
    add_exp_args(parser)
    parser.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=64)
    parser.add_argument("-d", "--devices", type=int, default=None, help="processes on this node")
    parser.add_argument("-c", "--ckpt", default=None,
                        help="checkpoint (default: <output_dir>/<experiment>/best_ckpt.pth)")
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold")
    parser.add_argument("--nms", type=float, default=None, help="NMS IoU threshold")
    parser.add_argument("--tsize", type=int, default=None, help="square test size")
    parser.add_argument("--fuse", action="store_true", help="fuse conv and BN before eval")
    parser.add_argument("--legacy", action="store_true", help="legacy (RGB, ImageNet-normalised) input")
    parser.add_argument("--test", action="store_true", help="evaluate on test-dev (test_ann)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--analyze", type=int, default=0, metavar="K",
                        help="draw the K val images with the most errors (missed + false detections) "
                             "into <output>/errors, with per-image counts in errors/per_image.json")
    parser.add_argument("--no-plots", dest="plots", action="store_false",
                        help="skip the confusion matrix / PR / F1 / P / R plots")
    add_device_args(parser)
    add_precision_args(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="exp overrides: key value ...")
    return parser


def apply_eval_flags(exp, args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.analyze < 0:
        raise UserError(f"--analyze must be >= 0 images (got {args.analyze})")
    if args.conf is not None:
        exp.test_conf = args.conf
    if args.nms is not None:
        exp.nmsthre = args.nms
    if args.tsize is not None:
        if args.tsize < 32 or args.tsize % 32:
            raise UserError(f"--tsize must be a positive multiple of 32 (got {args.tsize})")
        exp.test_size = (args.tsize, args.tsize)


def run_eval(exp, args):
    """Score the checkpoint ``args.ckpt`` (default <output_dir>/<experiment>/best_ckpt.pth) on
    ``exp``'s val split: (AP50:95, AP50, summary text). The CLI and yolox.api's ``evaluate``
    both come here, so a Python caller gets the very numbers ``python -m yolox.tools.eval`` prints."""
    device = resolve_device(args)
    info = init_distributed(device)
    setup_logger(Path(exp.output_dir) / args.experiment_name, rank=info.rank,
                 filename="val_log.txt")
    precision = Precision.from_args(args, device)
    exp.sync_classes("test" if args.test else "val")    # the model's class count is the data's
    model = load_model(exp, args, device)
    evaluator = exp.get_evaluator(args.batch_size, info.world_size > 1, testdev=args.test,
                                  legacy=args.legacy)
    evaluator.keep_rows = bool(getattr(args, "analyze", 0))
    with precision.autocast():
        out = exp.eval(model, evaluator, info.world_size > 1)
    if is_main_process():
        write_reports(evaluator, Path(exp.output_dir) / args.experiment_name, args)
    return out


def write_reports(evaluator, folder, args):
    """The per-class csv, the confusion csv and plots, and ``--analyze``'s images (main process;
    a failure here is one warning: the scores above stand)."""
    result = getattr(evaluator, "last_result", None)
    if result is None:          # an evaluator without per-class statistics (VOC's devkit table)
        return
    dataset = getattr(getattr(evaluator, "dataloader", None), "dataset", None)
    source = getattr(dataset, "source", None)
    eval_report.no_ground_truth(result, "test" if getattr(args, "test", False) else "val",
                                labels_folder(source) if source is not None else None)
    for path in eval_report.write_evaluation(result, folder, plots=getattr(args, "plots", True)):
        logger.info(f"wrote {path}")
    if getattr(args, "analyze", 0):
        eval_report.analyze(result, dataset.coco, result.rows, dataset.ids, dataset.source,
                            args.analyze, folder)


@cli_entry
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    exp = build_exp(args)
    apply_eval_flags(exp, args)
    if args.devices and args.devices > 1:
        launch_local(args.devices, main, argv)
    ap50_95, ap50, summary = run_eval(exp, args)
    if is_main_process():
        logger.info("\n" + summary)
        print(f"AP50_95: {ap50_95:.4f}\nAP50: {ap50:.4f}", flush=True)
    destroy()      # on success only, as train.py: a broken group's teardown can abort


if __name__ == "__main__":
    main()
