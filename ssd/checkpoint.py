"""SSD checkpoint files: this project's resume file (``ssd300_latest.pth``: weights, optimizer,
position, RNG) and the MLPerf reference's weights-only ``iter_N.pt`` (``{"model", "label_map"}``),
read, told apart, and loaded for resuming, fine-tuning on other labels or evaluating alone."""
import torch
from loguru import logger

from accel import watchdog
from accel.errors import UserError
from detcore.training.checkpoints import (Checkpoints, load, restore_training_state, run_config, save_on_main,
                                          training_state)
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


CHECKPOINT_NAME = "ssd300_latest.pth"
BEST_NAME = "ssd300_best.pth"     # the evaluation best in --best-metric (a full resume file)
REFERENCE_CKPT_DIR = "models"     # iter_N.pt, as the reference writes to ./models
PERIODIC_PREFIX = "ssd300_iter_"  # + 8-digit iteration + .pth: --checkpoint-interval files
# flags that do not change what a run computes: a resume by itself may differ in them.
# --patience and --best-metric, like --threshold, decide when a run stops and which evaluation
# is the best, not the numbers of any step: a resume with another patience continues the same
# trajectory (a checkpoint watching another metric restarts the count, MetricWatch).
RUN_VOLATILE = frozenset((
    "checkpoint", "output_dir", "log_interval", "num_workers", "dist_timeout", "logger", "local_rank",
    "no_save", "checkpoint_interval", "keep_checkpoints", "iteration", "eval_only", "val_batch_size",
    "val_interval", "val_epochs", "threshold", "nms_valid_thresh", "disable_distributed_validation",
    "dl_worker_type", "seed", "patience", "best_metric", "analyze", "mlflow_uri", "register"))


class CheckpointHooks:
    """``SSDRun``'s checkpoint hooks, kept with the files they write: which file a run starts
    from (``_resume_source``), what a checkpoint holds (``checkpoint_state``), ssd300_latest.pth /
    ssd300_best.pth at an epoch's end (``save``), the reference's ``models/iter_N.pt``
    (``save_reference``), the periodic and preemption files (``checkpoint_policy``) and what
    ``--register`` exports (``export_best``). They read the run's attributes (args, net,
    optimizer, precision, watch, report, position)."""

    def _resume_source(self):
        """The checkpoint this run starts from: --checkpoint, or by itself the folder's newest
        one after a torchrun restart or a preemption (detcore.training.checkpoints); None for a fresh run,
        which clears the periodic files an earlier run left in the folder."""
        args = self.args
        self.checkpoints = Checkpoints(self.out_dir, CHECKPOINT_NAME, args.checkpoint_interval,
                                       args.keep_checkpoints, prefix=PERIODIC_PREFIX, suffix=".pth")
        if self.eval_only:
            return read_checkpoint(args.checkpoint)
        path, saved = self.checkpoints.auto_resume(self.run_config(), "pass --checkpoint FILE")
        if path is not None:
            args.checkpoint = str(path)
            return saved
        saved = read_checkpoint(args.checkpoint) if args.checkpoint else None
        if not args.no_save and (saved is None or not is_resume_file(saved)):
            self.checkpoints.clear()
        return saved

    def run_config(self):
        """The flags that decide what this run computes (all but RUN_VOLATILE); a checkpoint of
        other flags is not resumed by itself (detcore.training.checkpoints). The seed counts only when given."""
        return run_config(vars(self.args), RUN_VOLATILE, seed=self.args.seed, world_size=self.info.world_size)

    def checkpoint_state(self, epoch, iteration, preempted=False):
        # label_map as in iter_N.pt, so every SSD checkpoint names its classes (ssd/demo.py)
        return {"model": self.net.state_dict(), "epoch": epoch, "iteration": iteration, "opt": self.args.opt,
                "label_map": self.train_set.label_info,
                **training_state(self.optimizer, self.precision, self.seed, self.run_config(), self.watch,
                                 [self.net], preempted, getattr(self, "report", None))}

    def save(self, epoch, iteration, best=False):
        """ssd300_latest.pth at an epoch's end (after its evaluation, so it holds the best-metric
        watch that evaluation updated) and, with ``best``, the same state as ssd300_best.pth."""
        if self.args.no_save:
            return
        watchdog.beat("checkpoint")
        state = self.checkpoint_state(epoch, iteration)
        save_on_main(state, self.out_dir / CHECKPOINT_NAME)
        if best:
            save_on_main(state, self.out_dir / BEST_NAME)
            logger.info(f"best {self.watch.metric} so far: {self.out_dir / BEST_NAME}")
        self.checkpoints.superseded(iteration)

    def save_reference(self, iteration):
        """The reference's ``models/iter_N.pt`` (weights + label map), written at each evaluation."""
        if self.args.no_save:
            return
        path = self.out_dir / REFERENCE_CKPT_DIR / f"iter_{iteration}.pt"
        save_on_main({"model": self.net.state_dict(), "label_map": self.train_set.label_info}, path)

    def checkpoint_policy(self, epoch):
        """After every step: a preemption signal on any rank writes a checkpoint at this
        iteration and stops the run (``Preempted``, exit 143); otherwise every
        ``--checkpoint-interval`` iterations a periodic checkpoint (epoch ends write
        ssd300_latest.pth in ``train_epoch``). ``--no-save`` writes neither."""
        self.checkpoints.after_step(
            self.iteration, epoch + 1, self.guard,
            lambda preempted=False: self.checkpoint_state(epoch, self.iteration, preempted=preempted),
            epoch_end=self.iteration % self.sampler.batches_per_epoch == 0, save=not self.args.no_save)

    def export_best(self, path):
        """ssd300_best.pth (else ssd300_latest.pth) as an end-to-end ONNX file (``--nms`` with
        ssd/demo.py's thresholds) at ``path``: what ``--register`` registers."""
        from ssd.export_onnx import main as export_main
        best = self.out_dir / BEST_NAME
        export_main(["--checkpoint", str(best if best.exists() else self.out_dir / CHECKPOINT_NAME),
                     "--output-name", str(path), "--nms"])
