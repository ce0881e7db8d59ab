"""YOLOX's training checkpoints (``latest_ckpt.pth``, ``best_ckpt.pth``, ``epoch_N_ckpt.pth`` and
the periodic ``iter_N_ckpt.pth``, with upstream's keys, so upstream and Habana files resume here):
which file a run starts from and what a resume restores. The policy (when files are written,
when a run resumes by itself) is ``detcore.training.checkpoints``, shared with SSD."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loguru import logger

from accel import unwrap, watchdog
from accel.errors import UserError
from detcore.training.checkpoints import (load, restore_training_state, run_config as config_of, save_on_main,
                                          training_state)
from detcore.training.weights import differences, load_ckpt, load_matching, strip_prefixes

# exp settings that do not change what a run computes: a resume may differ in them. ``patience``
# and ``best_metric`` decide when a run stops and which evaluation is "best", not any step's
# numbers (as SSD's --threshold): a resume by itself with another patience continues the same
# trajectory, so it is allowed (a checkpoint watching another metric restarts the count).
RUN_VOLATILE = ("output_dir", "print_interval", "eval_interval", "save_history_ckpt", "ckpt_interval",
                "ckpt_keep", "seed", "patience", "best_metric")
CLS_KEY = "head.cls_preds.0.weight"     # [num_classes, C, 1, 1]: the class count of a YOLOX state
FINE_TUNE_HINT = "to train this data from it, fine-tune: -c CKPT without --resume"
OTHER_DATA_HINT = ("use it on the data it was trained on, or fine-tune it on this data first "
                   "(tools/train.py -c CKPT, without --resume)")


def class_count(state):
    """The class count of a YOLOX state dict (or a checkpoint holding one under 'model'; DDP /
    compile prefixes allowed), or None when it has no YOLOX class head."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        return None
    for key, value in state.items():
        if key.endswith(CLS_KEY) and hasattr(value, "shape"):
            return int(value.shape[0])
    return None


def class_difference(names=None):
    """``load_ckpt``'s ``explain`` for YOLOX: when only the class predictions differ, the checkpoint
    was trained on another class count, which says more than "shape mismatch for head.cls_preds"."""
    def explain(own, state, missing, unexpected, reshaped):
        theirs, mine = class_count(state), class_count(own)
        if missing or unexpected or not theirs or theirs == mine \
                or not all(k.startswith("head.cls_preds.") for k in reshaped):
            return None
        listed = f" ({', '.join(map(str, names))})" if names and len(names) == mine else ""
        return f"the checkpoint has {theirs} classes, the data has {mine}{listed}"
    return explain


def load_strict(model, state, source, names=None, hint="check that -n/-f matches the checkpoint",
                class_hint=OTHER_DATA_HINT):
    """``load_ckpt`` with the class-count explanation; ``class_hint`` (what to do) ends the line
    when the class count is all that differs, ``hint`` otherwise."""
    explain = class_difference(names)
    sd = state["model"] if isinstance(state, dict) and isinstance(state.get("model"), dict) else state
    if isinstance(sd, dict) and all(hasattr(v, "shape") for v in sd.values()):
        own, sd = model.state_dict(), strip_prefixes(sd)
        if explain(own, sd, *differences(own, sd)):
            hint = class_hint
    load_ckpt(model, state, source=source, hint=hint, explain=explain)


@dataclass
class ResumePoint:
    """Where a resumed run continues: the file, its state, the position (0-based epoch and the
    iteration within it), the best AP so far and the run's seed (None in an older file)."""
    path: Path
    state: dict
    start_epoch: int
    start_iter: int
    best_ap: float
    seed: Optional[int]


def start_from(args, checkpoints, run_config, folder, model, optimizer, precision, watch, names=None):
    """``--resume`` (the full state of ``-c``, else of the folder's newest checkpoint; strict),
    a resume by itself after a torchrun restart or a preemption (``Checkpoints.auto_resume``), or
    else a fresh start (an earlier run's periodic files cleared) with ``-c`` alone as fine-tuning
    weights (every tensor whose name and shape fit; the rest keep their fresh initialisation).
    Returns the ``ResumePoint``, or None for a fresh start; ``names``: the data's class names,
    for the line that says a checkpoint has another class count."""
    if args.resume:
        path = Path(args.ckpt) if args.ckpt else checkpoints.newest()
        if path is None:
            raise UserError(f"--resume: {folder} holds no checkpoint (pass -c CKPT)")
        return resume(path, load(path), args.start_epoch, model, optimizer, precision, watch, names)
    path, state = checkpoints.auto_resume(run_config, "pass --resume -c FILE")
    if path is not None:
        return resume(path, state, args.start_epoch, model, optimizer, precision, watch, names)
    checkpoints.clear()
    if args.ckpt:
        # fine-tuning: another class count (or head) is expected, so shape-aware
        load_matching(model, load(args.ckpt), source=f"checkpoint {args.ckpt}")
        logger.info(f"loaded weights from {args.ckpt} for fine-tuning")
    return None


def resume(path, state, start_epoch, model, optimizer, precision, watch, names=None):
    """Model (the raw weights the optimizer updates, ``model_raw``, when the file has them),
    optimizer, precision and the best-metric watch from a training checkpoint; ``start_epoch``
    (``-e``, 1-based as upstream) overrides where the checkpoint stopped."""
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} has no 'model' entry (expected a YOLOX training checkpoint)")
    load_strict(model, state.get("model_raw", state["model"]), f"checkpoint {path}", names,
                class_hint=FINE_TUNE_HINT.replace("CKPT", str(path)))
    restore_training_state(state, path, optimizer, precision, watch)
    best_ap = float(state.get("best_ap", 0.0))
    if "best_metric" not in state and watch.metric == "ap50_95" and best_ap > 0:
        watch.best = best_ap      # an older checkpoint: its best AP, epoch unknown
    if start_epoch is not None:
        position = (start_epoch - 1, 0)
    else:
        position = (int(state.get("start_epoch", 0)), int(state.get("start_iter", 0)))
    seed = int(state["seed"]) if state.get("seed") is not None else None
    return ResumePoint(Path(path), state, *position, best_ap, seed)


def run_config(exp, seed_given, batch_size, precision):
    """The settings that decide what a run computes; a checkpoint of other settings is not
    resumed by itself (``detcore.training.checkpoints``). The seed counts only when given."""
    return config_of(exp.settings(), RUN_VOLATILE, seed=exp.seed if seed_given else None,
                     batch_size=batch_size, precision=precision)


def class_names(exp):
    """The names of the classes the model predicts, when the exp lists one per class (eval,
    demo and export then build the right model from the checkpoint alone); else []."""
    names = [str(n) for n in (getattr(exp, "class_names", None) or ())]
    return names if len(names) == exp.num_classes else []


def checkpoint_state(exp, position, model, raw_model, ema, input_size, best_ap, ap, training):
    """A YOLOX training checkpoint with upstream's keys: ``position`` = (next epoch, next
    iteration within it, iterations per epoch); ``model`` holds the evaluated weights (the EMA's
    when there is one: what upstream saves and eval/demo load), ``model_raw`` the weights the
    optimizer updates; ``training``: ``detcore.training.checkpoints.training_state``."""
    next_epoch, next_iter, per_epoch = position
    state = {"start_epoch": next_epoch, "start_iter": next_iter, "iteration": next_epoch * per_epoch + next_iter,
             "iters_per_epoch": per_epoch, "model": model.state_dict(), "best_ap": float(best_ap),
             "class_names": class_names(exp), "curr_ap": ap, "input_size": tuple(input_size), **training}
    if ema is not None:
        state["model_raw"] = raw_model.state_dict()
        state["ema_updates"] = ema.updates
    return state


class CheckpointHooks:
    """The ``Trainer``'s checkpoint hooks, kept with the checkpoint format they write: what a
    YOLOX run saves (``checkpoint_state``, ``save_ckpt``; the periodic and preemption files of
    ``checkpoint_policy``), what it starts from (``load_weights``) and what ``--register``
    exports (``export_best``). They read the trainer's attributes (model, EMA, optimizer,
    precision, watch, report, position)."""

    def eval_model(self):
        return self.ema.ema if self.ema is not None else unwrap(self.model)

    def checkpoint_policy(self):
        """After every step: the preemption stop or a periodic checkpoint every
        ``exp.ckpt_interval`` iterations (``Checkpoints.after_step``; epoch ends write
        latest_ckpt.pth in ``after_epoch`` instead)."""
        self.checkpoints.after_step(
            self.progress_in_iter + 1, self.epoch + 1, self.guard,
            lambda preempted=False: self.checkpoint_state(self.epoch, self.iter + 1, preempted=preempted),
            epoch_end=self.iter + 1 >= self.max_iter)

    def stateful_modules(self):
        """The modules whose buffers differ per rank: the trained model and its EMA."""
        return [unwrap(self.model)] + ([self.ema.ema] if self.ema is not None else [])

    def run_config(self):
        return run_config(self.exp, self._seed_given, self.batch_size, self.precision.mode)

    def checkpoint_state(self, next_epoch, next_iter, ap=None, preempted=False):
        """Everything resume needs (``checkpoint_state`` above)."""
        return checkpoint_state(
            self.exp, (next_epoch, next_iter, self.max_iter), self.eval_model(), unwrap(self.model), self.ema,
            self.input_size, self.best_ap, ap,
            training_state(self.optimizer, self.precision, self.exp.seed, self.run_config(), self.watch,
                           self.stateful_modules(), preempted, self.report))

    def save_ckpt(self, name, next_epoch, next_iter, ap=None):
        path = self.file_name / f"{name}_ckpt.pth"
        watchdog.beat("checkpoint")
        save_on_main(self.checkpoint_state(next_epoch, next_iter, ap), path)
        logger.info(f"saved checkpoint {path}")

    def export_best(self, path):
        """best_ckpt.pth as an end-to-end ONNX file (``--nms`` with tools/demo.py's thresholds)
        at ``path``: what ``--register`` registers."""
        from yolox.core.cli import exportable_model
        from yolox.tools.export_onnx import NMS_DEFAULTS, save_onnx
        model = exportable_model(self.exp, self.file_name / "best_ckpt.pth")
        save_onnx(model, path, self.exp.test_size, onnxsim=False, class_names=getattr(self.exp, "class_names", None),
                  nms={**NMS_DEFAULTS, "agnostic": False})

    def load_weights(self, model):
        """What the run starts from (``yolox.core.checkpoint.start_from``): a resume restores the
        model, optimizer, precision, best-metric watch, seed and position here. Returns the
        checkpoint resumed, or None."""
        point = start_from(self.args, self.checkpoints, self.run_config(), self.file_name, model,
                           self.optimizer, self.precision, self.watch, getattr(self.exp, "class_names", None))
        if point is None:
            return None
        self.resume_path, self.best_ap = point.path, point.best_ap
        self.start_epoch, self.start_iter = point.start_epoch, point.start_iter
        if point.seed is not None and not self._seed_given:
            self.exp.seed = point.seed            # the run's own seed, even when it was drawn
        return point.state
