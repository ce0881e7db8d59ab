"""What YOLOX's tools do with their parsed flags (``yolox.core.options``): the data-directory
fallbacks, the exp with its overrides, and the model with its checkpoint for eval, demo and export."""
import os
from pathlib import Path

from accel.errors import UserError
from yolox.exp import get_exp

DEFAULT_DATA_DIR = Path("datasets") / "COCO"


def resolve_data_dir(flag, exp_value, env=None):
    """--data_dir, else the exp's data_dir, else $YOLOX_DATADIR, else ./datasets/COCO; must exist
    (a folder: COCO root, VOC devkit or YOLO data set; or a data.yaml file: ``detcore.data.layout``
    says which it is when the data is read)."""
    env = os.environ if env is None else env
    for source, value in (("--data_dir", flag), ("exp data_dir", exp_value),
                          ("YOLOX_DATADIR", env.get("YOLOX_DATADIR")),
                          ("default", str(DEFAULT_DATA_DIR))):
        if value:
            break
    path = Path(value)
    if not (path.is_dir() or path.is_file()):
        raise UserError(f"data directory {path} (from {source}) does not exist; expected a COCO "
                        "folder with annotations/ and train2017/ val2017/, a VOC devkit or a YOLO "
                        "data.yaml (pass --data_dir PATH)")
    return str(path)


def build_exp(args, need_data=True):
    """The exp named by -f/-n with trailing ``key value`` overrides applied, data dir resolved."""
    exp = get_exp(args.exp_file, args.name)
    apply_overrides(exp, list(getattr(args, "opts", None) or []))
    if need_data:
        exp.data_dir = resolve_data_dir(args.data_dir, exp.data_dir)
    if getattr(args, "seed", None) is not None:
        exp.seed = args.seed
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    return exp


def apply_overrides(exp, opts):
    """The trailing ``key value`` pairs onto ``exp`` (type-checked by ``exp.merge``), with
    Habana's rule that ``steps N`` alone means one epoch of N iterations."""
    exp.merge(opts)
    keys = opts[0::2]
    if "steps" in keys and "max_epoch" not in keys and exp.steps:
        exp.max_epoch = 1


def load_model(exp, args, device):
    """The exp's model with the checkpoint's weights (``-c``, else best_ckpt.pth), in eval mode,
    conv-BN fused when ``args.fuse``."""
    ckpt = args.ckpt or str(Path(exp.output_dir) / args.experiment_name / "best_ckpt.pth")
    return load_weights(exp, ckpt, device, fuse=getattr(args, "fuse", False))


def classes_of_checkpoint(exp, state, ckpt):
    """A training checkpoint names the classes it was trained on (``class_names``): where the
    data did not set them and the exp has the default count, eval / demo / export build that
    model without being told (``exp.sync_classes``: an explicitly set other count is one line)."""
    names = state.get("class_names") if isinstance(state, dict) else None
    if names and getattr(exp, "_data_names", None) is None and hasattr(exp, "sync_classes"):
        exp.sync_classes(names=names, where=f"checkpoint {ckpt}")


def load_weights(exp, ckpt, device, fuse=False):
    """``load_model`` with plain arguments (yolox.api uses it): the exp's model with ``ckpt``'s
    weights, on ``device``, in eval mode, conv-BN fused when ``fuse``; the class count and names
    a training checkpoint records are taken where the data did not set them."""
    from loguru import logger

    from detcore.training.checkpoints import load as load_checkpoint
    from yolox.core.checkpoint import OTHER_DATA_HINT, load_strict
    from yolox.utils import fuse_model

    state = load_checkpoint(ckpt)
    classes_of_checkpoint(exp, state, ckpt)
    model = exp.get_model()
    load_strict(model, state, f"checkpoint {ckpt}", getattr(exp, "class_names", None),
                class_hint=OTHER_DATA_HINT.replace("CKPT", str(ckpt)))
    logger.info(f"loaded checkpoint {ckpt}")
    model = model.to(device).eval()
    if fuse:
        model = fuse_model(model)
    return model


def export_model(args):
    """(exp, eval-mode model) for an export: the exp with overrides, the ``-c`` weights loaded
    strictly (an export of the wrong checkpoint is one line), ``decode_in_inference`` set. Without
    ``-c`` only ``--random-weights`` exports untrained weights: silently shipping them is a trap."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_weights_choice(args.ckpt, args.random_weights)
    exp = build_exp(args, need_data=False)
    return exp, exportable_model(exp, args.ckpt, args.random_weights, args.decode_in_inference)


def _check_weights_choice(ckpt, random_weights):
    if ckpt is None and not random_weights:
        raise UserError("no checkpoint: pass -c CKPT (or --random-weights to export untrained weights)")
    if ckpt is not None and random_weights:
        raise UserError("-c and --random-weights exclude each other")


def exportable_model(exp, ckpt=None, random_weights=False, decode_in_inference=False):
    """``export_model``'s model with plain arguments (yolox.api uses it): ``exp``'s model with
    ``ckpt`` loaded strictly, or fresh weights when ``random_weights``, in eval mode, boxes
    decoded in the graph when ``decode_in_inference``."""
    from loguru import logger

    from detcore.training.checkpoints import load as load_checkpoint
    from yolox.core.checkpoint import OTHER_DATA_HINT, load_strict

    _check_weights_choice(ckpt, random_weights)
    state = load_checkpoint(ckpt) if ckpt is not None else None
    classes_of_checkpoint(exp, state, ckpt)
    model = exp.get_model()
    if ckpt is not None:
        load_strict(model, state, f"checkpoint {ckpt}", getattr(exp, "class_names", None),
                    class_hint=OTHER_DATA_HINT.replace("CKPT", str(ckpt)))
        logger.info(f"loaded checkpoint {ckpt}")
    else:
        logger.warning("--random-weights: exporting freshly initialised weights")
    model.eval()
    model.head.decode_in_inference = decode_in_inference
    return model
