"""Pieces shared by tools/train.py, eval.py and demo.py: argument parsing that reports mistakes
as one-line UserErrors, exp selection + overrides, and the data-directory fallbacks."""
import argparse
import os
from pathlib import Path

from accel.errors import UserError

DEFAULT_DATA_DIR = Path("datasets") / "COCO"


class ArgParser(argparse.ArgumentParser):
    """argparse whose errors become UserErrors (one ``error:`` line, exit code 2)."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def add_exp_args(parser):
    """-f/-n/-expn and the data dir flags every YOLOX tool takes."""
    parser.add_argument("-expn", "--experiment-name", dest="experiment_name", default=None)
    parser.add_argument("-n", "--name", default=None, help="model name, e.g. yolox-s")
    parser.add_argument("-f", "--exp_file", "--exp-file", dest="exp_file", default=None,
                        help="experiment file, e.g. exps/default/yolox_s.py")
    parser.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None,
                        help="COCO-layout folder (default: exp.data_dir, $YOLOX_DATADIR, ./datasets/COCO)")
    return parser


def resolve_data_dir(flag, exp_value, env=None):
    """--data_dir, else the exp's data_dir, else $YOLOX_DATADIR, else ./datasets/COCO; must exist."""
    env = os.environ if env is None else env
    for source, value in (("--data_dir", flag), ("exp data_dir", exp_value),
                          ("YOLOX_DATADIR", env.get("YOLOX_DATADIR")),
                          ("default", str(DEFAULT_DATA_DIR))):
        if value:
            break
    path = Path(value)
    if not path.is_dir():
        raise UserError(f"data directory {path} (from {source}) does not exist; expected a COCO "
                        "folder with annotations/ and train2017/ val2017/ (pass --data_dir DIR)")
    return str(path)


def build_exp(args, need_data=True):
    """The exp named by -f/-n with trailing ``key value`` overrides applied, data dir resolved."""
    from yolox.exp import get_exp

    exp = get_exp(args.exp_file, args.name)
    opts = list(getattr(args, "opts", None) or [])
    exp.merge(opts)
    keys = opts[0::2]
    if "steps" in keys and "max_epoch" not in keys and exp.steps:
        # Habana's recipe: ``steps N`` alone means one epoch of N iterations
        exp.max_epoch = 1
    if need_data:
        exp.data_dir = resolve_data_dir(args.data_dir, exp.data_dir)
    if getattr(args, "seed", None) is not None:
        exp.seed = args.seed
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    return exp


def load_model(exp, args, device):
    """The exp's model with the checkpoint's weights (``-c``, else best_ckpt.pth), in eval mode,
    conv-BN fused when ``args.fuse``."""
    from loguru import logger

    from accel.checkpoint import load as load_checkpoint
    from yolox.utils import fuse_model, load_ckpt

    model = exp.get_model()
    ckpt = args.ckpt or str(Path(exp.output_dir) / args.experiment_name / "best_ckpt.pth")
    load_ckpt(model, load_checkpoint(ckpt))
    logger.info(f"loaded checkpoint {ckpt}")
    model = model.to(device).eval()
    if getattr(args, "fuse", False):
        model = fuse_model(model)
    return model


def add_export_args(parser, default_output):
    """The flags upstream HEAD's tools/export_onnx.py and export_torchscript.py share."""
    add_exp_args(parser)
    parser.add_argument("--output-name", "--output_name", dest="output_name", default=default_output,
                        help="output file")
    parser.add_argument("-c", "--ckpt", default=None, help="checkpoint .pth to export")
    parser.add_argument("--random-weights", action="store_true",
                        help="export the exp's freshly initialised weights (no -c)")
    parser.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=1)
    parser.add_argument("--decode_in_inference", "--decode-in-inference", dest="decode_in_inference",
                        action="store_true", help="decode boxes in the graph (default: the raw "
                        "per-anchor map, what upstream's runtime demos expect)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="exp overrides: key value ...")
    return parser


def export_model(args):
    """(exp, eval-mode model) for an export: the exp with overrides, the ``-c`` weights loaded
    strictly (an export of the wrong checkpoint is one line), ``decode_in_inference`` set. Without
    ``-c`` only ``--random-weights`` exports untrained weights: silently shipping them is a trap."""
    from loguru import logger

    from yolox.utils import load_ckpt

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.ckpt is None and not args.random_weights:
        raise UserError("no checkpoint: pass -c CKPT (or --random-weights to export untrained weights)")
    if args.ckpt is not None and args.random_weights:
        raise UserError("-c and --random-weights exclude each other")
    exp = build_exp(args, need_data=False)
    model = exp.get_model()
    if args.ckpt is not None:
        load_ckpt(model, args.ckpt)
        logger.info(f"loaded checkpoint {args.ckpt}")
    else:
        logger.warning("--random-weights: exporting freshly initialised weights")
    model.eval()
    model.head.decode_in_inference = args.decode_in_inference
    return exp, model
