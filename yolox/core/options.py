"""The flags of YOLOX's tools, defined once: argument parsing that reports mistakes as one-line
UserErrors, the exp and data flags every tool takes, tools/train.py's and the exporters' flags,
and their keyword form for Python callers (``Trainer(exp, batch_size=8)``, ``yolox.api``).

argparse and ``accel``'s flag helpers only: ``Trainer`` reads its defaults from here, so this
module must not need the exp or the trainer (``yolox.core.cli`` builds the exps; the tools use both)."""
import argparse

from accel import add_device_args, add_precision_args
from accel.distributed import DEFAULT_TIMEOUT_S
from accel import errors
from accel.errors import UserError
from detcore.training.mlflow_run import add_mlflow_args


class ArgParser(errors.ArgParser):
    """The tools' parser: also turns trailing ``key value`` exp overrides into ``opts``."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        spilled = vars(ns).pop("_cache_spilled", None)      # see CacheAction
        if spilled is not None:
            if not hasattr(ns, "opts"):
                raise UserError(f"{self.prog}: --cache {spilled!r}: expected 'ram' or 'disk'")
            ns.opts = [spilled] + list(ns.opts or [])
        return ns, extra


class CacheAction(argparse.Action):
    """``--cache [ram|disk]`` as upstream HEAD, a bare ``--cache`` meaning 'ram' (this project's
    older RAM-only flag). A bare ``--cache`` followed by the trailing ``key value`` overrides
    (``--cache max_epoch 2``) must keep working: argparse hands the key to ``--cache`` as its value,
    so it is put back in front of ``opts`` (``ArgParser.parse_known_args``) and the cache is 'ram'."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None or values.lower() in ("ram", "disk"):
            setattr(namespace, self.dest, (values or self.const).lower())
            return
        setattr(namespace, self.dest, self.const)
        namespace._cache_spilled = values


def add_exp_args(parser):
    """-f/-n/-expn and the data dir flags every YOLOX tool takes."""
    parser.add_argument("-expn", "--experiment-name", dest="experiment_name", default=None)
    parser.add_argument("-n", "--name", default=None, help="model name, e.g. yolox-s")
    parser.add_argument("-f", "--exp_file", "--exp-file", dest="exp_file", default=None,
                        help="experiment file, e.g. exps/default/yolox_s.py")
    parser.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None,
                        help="the data: a COCO root, a VOC devkit or a YOLO data.yaml (default: exp.data_dir, "
                             "$YOLOX_DATADIR, ./datasets/COCO)")
    return parser


def train_parser():
    """tools/train.py's flags; also the defaults of ``Trainer``'s keywords (``train_options``)."""
    parser = ArgParser("train.py", description="YOLOX training")
    add_exp_args(parser)
    parser.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                        help="total batch size over all devices")
    parser.add_argument("-d", "--devices", type=int, default=None, help="processes on this node")
    parser.add_argument("--resume", action="store_true", help="resume from -c or latest_ckpt.pth")
    parser.add_argument("-c", "--ckpt", default=None, help="checkpoint to resume or fine-tune from")
    parser.add_argument("-e", "--start_epoch", "--start-epoch", dest="start_epoch", type=int,
                        default=None, help="resume at this epoch (1-based)")
    parser.add_argument("--cache", nargs="?", const="ram", default=None, action=CacheAction,
                        help="decode and resize each training image once: 'ram' (the default of a "
                             "bare --cache; shared by the loader workers) or 'disk' (.npy files, "
                             "exp option cache_dir)")
    parser.add_argument("--freeze", action="store_true",
                        help="freeze the backbone (weights and BN statistics) while fine-tuning; "
                             "same as the exp's freeze_backbone True")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("-l", "--logger", choices=("loguru", "tensorboard", "wandb", "mlflow"), default="loguru",
                        help="also log scalars to tensorboard, wandb (trailing wandb-KEY VALUE "
                             "options go to wandb.init, as upstream) or mlflow (params, metrics, artifacts)")
    add_mlflow_args(parser)
    parser.add_argument("-o", "--occupy", action="store_true",
                        help="reserve most free CUDA memory up front (upstream's --occupy)")
    parser.add_argument("--dist-backend", "--dist_backend", dest="dist_backend", default=None,
                        choices=("nccl", "gloo", "hccl"),
                        help="process-group backend (default: hccl on hpu, nccl on cuda, gloo on cpu)")
    parser.add_argument("--dist-url", "--dist_url", dest="dist_url", default=None,
                        help="tcp://HOST:PORT of rank 0 for multi-machine runs (default: auto)")
    parser.add_argument("--num_machines", "--num-machines", dest="num_machines", type=int, default=1)
    parser.add_argument("--machine_rank", "--machine-rank", dest="machine_rank", type=int, default=0)
    parser.add_argument("--dist-timeout", dest="dist_timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds any collective may wait for a rank before the run stops")
    parser.add_argument("--use_lazy_mode", "--use-lazy-mode", dest="use_lazy_mode", default=None,
                        type=true_false, help="HPU lazy mode True (default) or False (eager)")
    parser.add_argument("--use-torch-compile", "--use_torch_compile", dest="use_torch_compile",
                        action="store_true", help="train through torch.compile (inductor; "
                        "hpu_backend on HPU, which needs PT_HPU_LAZY_MODE=0)")
    add_device_args(parser)
    add_precision_args(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="exp overrides: key value ...")
    return parser


def true_false(text):
    if text.strip().lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text.strip().lower() == "true"


def keyword_options(parser, caller, args=None, extra=(), **options):
    """The namespace a CLI's code reads, for a Python caller: ``parser``'s defaults, then
    ``args`` (a parsed namespace), then plain keywords (``batch_size=8, device="cpu"``), so the
    keywords are exactly the CLI's flags (their ``dest`` names). An unknown keyword is a TypeError
    naming ``caller`` and it, as a mistyped Python argument should be; ``extra`` names keywords a
    caller may add that are not flags."""
    merged = vars(parser.parse_args([]))
    unknown = sorted(set(options) - set(merged) - set(extra))
    if unknown:
        raise TypeError(f"{caller} got unknown option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(merged))}")
    merged.update(vars(args) if args is not None else {})
    merged.update(options)
    return argparse.Namespace(**merged)


def train_options(args=None, **options):
    """The namespace ``Trainer`` reads: tools/train.py's defaults, then ``args`` (a parsed
    namespace), then plain keywords (``batch_size=8, device="cpu"``)."""
    return keyword_options(train_parser(), "Trainer", args, extra=("wandb_options",), **options)


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
