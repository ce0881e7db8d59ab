"""SSD checkpoint files: this project's resume file (``ssd300_latest.pth``: weights, optimizer,
position, RNG) and the MLPerf reference's weights-only ``iter_N.pt`` (``{"model", "label_map"}``),
read, told apart, and loaded for resuming, fine-tuning on other labels or evaluating alone."""
import torch
from loguru import logger

from accel.errors import UserError
from detcore.training.checkpoints import load, restore_training_state
from detcore.training.weights import load_ckpt, load_matching, strip_prefixes
from ssd.model import NUM_DEFAULTS


def read_checkpoint(path):
    """The ``--checkpoint`` file: this project's ``ssd300_latest.pth`` or the reference's
    ``iter_N.pt``; anything else is one line."""
    state = load(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"--checkpoint {path}: not an SSD checkpoint (expected a dict with a 'model' "
                        "state dict: ssd300_latest.pth or the reference's iter_N.pt)")
    return state


def is_resume_file(state):
    """This project's ``ssd300_latest.pth`` carries its position; the reference's (and our)
    ``models/iter_N.pt`` holds weights and label names only."""
    return "iteration" in state


def label_count(state):
    """Labels (background included) an SSD300 state dict predicts: its first class-confidence
    conv has ``NUM_DEFAULTS[0]`` outputs per label. None when the state has no such conv."""
    weight = state.get("conf.0.weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[0] % NUM_DEFAULTS[0]:
        return None
    return weight.shape[0] // NUM_DEFAULTS[0]


def label_names(state):
    """Label -> name from a checkpoint's ``label_map`` (the reference's ``label_info``: label ->
    name, 0 = background); {} when it has none (a resume file written before it carried one)."""
    label_map = state.get("label_map")
    if not isinstance(label_map, dict):
        return {}
    return {int(k): str(v) for k, v in label_map.items() if str(k).lstrip("-").isdigit()}


def label_difference(own, state, missing, unexpected, reshaped):
    """The usual reason a checkpoint does not fit (``load_ckpt``'s ``explain``): only the
    class-confidence convs differ, because it predicts another number of labels."""
    theirs, mine = label_count(state), label_count(own)
    if not missing and not unexpected and all(k.startswith("conf.") for k in reshaped) and theirs:
        return f"it predicts {theirs} labels, --data has {mine} (background included)"
    return None


def load_strict(model, state, path, hint):
    """Every tensor of ``model`` from ``state["model"]`` (DDP / compile prefixes stripped), or
    one line naming the file, what does not fit and ``hint`` (what to do instead)."""
    load_ckpt(model, state, source=f"--checkpoint {path}", hint=hint, explain=label_difference)


RESUME_HINT = ("a resume file (ssd300_latest.pth) continues its own run on the same labels; to "
               "fine-tune on other data start from a weights-only models/iter_N.pt of that run")
EVAL_HINT = "--eval-only scores a checkpoint trained on the labels of --data"


def load_checkpoint(path, model, optimizer, precision, start_iteration, state=None, watch=None):
    """``--checkpoint``: this project's resume file (model, optimizer, RNG, position; strict:
    resuming a run on other labels is a mistake) or a weights-only ``iter_N.pt`` (the MLPerf
    reference's ``{"model", "label_map"}``, also ours), loaded as a fine-tuning start: every
    tensor whose name and shape fit, the rest (an 81-label file's class-confidence convs in a
    5-label model) keeps its fresh initialisation, said in one warning line; the run starts at
    ``--iteration`` as in the reference. Returns (iteration, state)."""
    state = read_checkpoint(path) if state is None else state
    if not is_resume_file(state):
        load_matching(model, state, source=f"--checkpoint {path}",
                      hint="expected SSD300-ResNet34 weights (models/iter_N.pt)")
        return start_iteration, state
    load_strict(model, state, path, RESUME_HINT)
    restore_training_state(state, path, optimizer, precision, watch)
    return int(state["iteration"]), state


def check_label_names(state, dataset, path):
    """--eval-only: a checkpoint whose ``label_map`` names other classes than the data (same
    count, another order or set) would be scored against the wrong classes: one line instead."""
    names = label_names(state)
    if not names:
        return
    theirs = [names.get(i, str(i)) for i in range(1, dataset.num_classes)]
    ours = [dataset.label_info[i] for i in range(1, dataset.num_classes)]
    if theirs != ours:
        raise UserError(f"--checkpoint {path}: trained on the classes {', '.join(theirs)}, but --data "
                        f"has {', '.join(ours)}; {EVAL_HINT}")


def checkpoint_classes(saved):
    """The class names of a checkpoint in label order, when it names every label it predicts
    (``--eval-only`` on a layout whose labels are inferred, VOC: labels then mean what they meant
    in training); None otherwise."""
    names = label_names(saved)
    count = label_count(strip_prefixes(saved["model"]))
    if not names or count is None or any(i not in names for i in range(1, count)):
        return None
    return [names[i] for i in range(1, count)]


def start_from(args, saved, net, optimizer, precision, watch):
    """(iteration, resumed state or None) of a training run: ``--iteration`` from scratch; with
    ``--checkpoint``, a resume file continues its run (same ``--opt``; model, optimizer, RNG,
    position) and a weights-only file starts a fine-tune at ``--iteration``."""
    if not args.checkpoint:
        return args.iteration, None
    resume = is_resume_file(saved)
    if resume and saved.get("opt", "sgd") != args.opt:
        raise UserError(f"--checkpoint {args.checkpoint}: its run trained with --opt {saved.get('opt', 'sgd')}; "
                        f"resume it with the same --opt (got --opt {args.opt})")
    iteration, state = load_checkpoint(args.checkpoint, net, optimizer, precision, args.iteration, saved, watch)
    if resume:
        logger.info(f"resumed from {args.checkpoint} at iteration {iteration}")
        return iteration, state
    logger.info(f"weights from {args.checkpoint} (weights only); starting at iteration {iteration}")
    return iteration, None       # no RNG state or position to restore
