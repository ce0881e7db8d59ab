"""YOLOX's training checkpoints (``latest_ckpt.pth``, ``best_ckpt.pth``, ``epoch_N_ckpt.pth`` and
the periodic ``iter_N_ckpt.pth``, with upstream's keys, so upstream and Habana files resume here):
which file a run starts from and what a resume restores. The policy (when files are written,
when a run resumes by itself) is ``detcore.training.checkpoints``, shared with SSD."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loguru import logger

from accel.errors import UserError
from detcore.training.checkpoints import load, restore_training_state
from detcore.training.weights import load_ckpt, load_matching


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


def start_from(args, checkpoints, run_config, folder, model, optimizer, precision, watch):
    """``--resume`` (the full state of ``-c``, else of the folder's newest checkpoint; strict),
    a resume by itself after a torchrun restart or a preemption (``Checkpoints.auto_resume``), or
    else a fresh start (an earlier run's periodic files cleared) with ``-c`` alone as fine-tuning
    weights (every tensor whose name and shape fit; the rest keep their fresh initialisation).
    Returns the ``ResumePoint``, or None for a fresh start."""
    if args.resume:
        path = Path(args.ckpt) if args.ckpt else checkpoints.newest()
        if path is None:
            raise UserError(f"--resume: {folder} holds no checkpoint (pass -c CKPT)")
        return resume(path, load(path), args.start_epoch, model, optimizer, precision, watch)
    path, state = checkpoints.auto_resume(run_config, "pass --resume -c FILE")
    if path is not None:
        return resume(path, state, args.start_epoch, model, optimizer, precision, watch)
    checkpoints.clear()
    if args.ckpt:
        # fine-tuning: another class count (or head) is expected, so shape-aware
        load_matching(model, load(args.ckpt), source=f"checkpoint {args.ckpt}")
        logger.info(f"loaded weights from {args.ckpt} for fine-tuning")
    return None


def resume(path, state, start_epoch, model, optimizer, precision, watch):
    """Model (the raw weights the optimizer updates, ``model_raw``, when the file has them),
    optimizer, precision and the best-metric watch from a training checkpoint; ``start_epoch``
    (``-e``, 1-based as upstream) overrides where the checkpoint stopped."""
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} has no 'model' entry (expected a YOLOX training checkpoint)")
    load_ckpt(model, state.get("model_raw", state["model"]))
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
