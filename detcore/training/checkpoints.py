"""Where a run's checkpoints go and which one a run continues from, the same for both trainers.

- Periodic checkpoints: every ``every`` iterations (and at a preemption) the main process writes
  ``<prefix><iteration:08d><suffix>`` atomically (``save_atomic``: a crash mid-write leaves
  only a hidden temp file, never a half-written checkpoint under this name) and keeps the newest
  ``keep`` of them. An epoch-end checkpoint (the trainer's ``latest`` file) supersedes the periodic
  ones at or before its iteration, which are then deleted: any periodic file left is newer than it.
- Resuming: the newest complete checkpoint of the folder is the newest periodic file if any, else
  the ``latest`` file.
- Resuming by itself: when torchrun restarted the worker group (``--max-restarts``), Slurm
  requeued the job (``SLURM_RESTART_COUNT``: after a preemption or a node failure) or the
  folder's newest checkpoint was written at a preemption, a run started with the same command
  resumes without being told, provided the checkpoint belongs to the same configuration (the
  keys the trainer names in ``run_config``); otherwise it stops with one line saying which keys
  differ instead of overwriting another run's state.
- A fresh run in a folder deletes the periodic files of the run it replaces, so a later restart
  can never pick them up.
- After every step (``Checkpoints.after_step``): a preemption signal on any rank writes a periodic
  checkpoint at this iteration and stops the run (``Preempted``, exit 143); otherwise a periodic
  checkpoint when one is due. Both trainers call it.
- What every training checkpoint holds besides the model (``training_state``): optimizer,
  precision (loss scaler), seed, every rank's RNG and BN buffers, the run configuration
  (``run_config``), the preemption flag and the best-metric watch; ``restore_training_state``
  and ``restore_rng`` put them back.
- Reading and writing: ``save_atomic`` (torch.save through ``detcore.files.write_atomic``),
  ``save_on_main`` (the main process writes, every rank waits) and ``load`` (weights-only, plus
  the NumPy scalars upstream checkpoints hold; a missing or corrupt file is one line).
"""
import contextlib
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from accel import all_gather_object, barrier, get_rank, get_world_size, is_main_process, watchdog
from accel.distributed import restart_reason
from accel.errors import Preempted, UserError
from detcore.files import write_atomic
from detcore.training.mlflow_run import RUN_ID_KEY
from detcore.training.toolbox import rng_state, set_rng_state


def save_atomic(obj, path):
    """torch.save ``obj`` to ``path`` atomically (``detcore.files.write_atomic``)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def save_on_main(state, path):
    """Write a checkpoint atomically from the main process; every rank waits for it."""
    if is_main_process():
        save_atomic(state, path)
    barrier()


def numpy_scalar_globals():
    """Exactly what a pickled NumPy scalar needs (upstream/Habana YOLOX checkpoints store
    ``best_ap`` as ``numpy.float64``): the scalar constructor under its NumPy 1 and NumPy 2
    module names, ``numpy.dtype`` and the dtype classes of the scalar kinds metrics use."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:                                   # NumPy 1
        from numpy.core.multiarray import scalar
    kinds = ("float64", "float32", "float16", "int64", "int32", "bool")
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *{type(np.dtype(k)) for k in kinds}]


def _allowing_numpy_scalars():
    """A context in which weights-only loading also accepts ``numpy_scalar_globals()``
    (torch >= 2.5). Older torch cannot rebuild NumPy scalars weights-only at all; there such a
    checkpoint fails with a line saying so (see ``load``)."""
    ser = torch.serialization
    return ser.safe_globals(numpy_scalar_globals()) if hasattr(ser, "safe_globals") else contextlib.nullcontext()


def load(path, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True`` (plus NumPy scalars, nothing else); a
    missing, corrupt or non-torch file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist (expected a .pth file)")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UserError(f"checkpoint {path} is not a torch checkpoint (neither torch.save's zip "
                        "format nor a pickle)")
    try:
        with _allowing_numpy_scalars():
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError,
            UnicodeDecodeError, OSError) as exc:
        # torch's own advice (load with weights_only=False: that would run arbitrary code) is
        # left out; what remains says what was refused
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1]
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and "weights_only" not in ln and "Check the documentation" not in ln]
        why = lines[0] if lines else type(exc).__name__
        if "numpy" in why and not hasattr(torch.serialization, "safe_globals"):
            why += f"; torch {torch.__version__} cannot load NumPy values weights-only (torch >= 2.5 can)"
        raise UserError(f"checkpoint {path} is not a loadable torch checkpoint "
                        f"({type(exc).__name__}: {why[:200]})") from None


class Checkpoints:
    """The checkpoint files of one output folder: ``latest`` (epoch ends, the trainer's own name)
    and the periodic ``<prefix>NNNNNNNN<suffix>`` files."""

    def __init__(self, folder, latest_name, every=0, keep=2, prefix="iter_", suffix="_ckpt.pth"):
        if every < 0:
            raise UserError(f"checkpoint interval must be >= 0 iterations (got {every})")
        if keep < 1:
            raise UserError(f"checkpoints to keep must be >= 1 (got {keep})")
        self.folder, self.latest = Path(folder), Path(folder) / latest_name
        self.every, self.keep = int(every), int(keep)
        self.prefix, self.suffix = prefix, suffix
        self._pattern = re.compile(re.escape(prefix) + r"(\d{8})" + re.escape(suffix) + "$")

    def due(self, iteration):
        """Whether global iteration ``iteration`` (1-based count of finished steps) gets one."""
        return self.every > 0 and iteration % self.every == 0

    def periodic_path(self, iteration):
        return self.folder / f"{self.prefix}{iteration:08d}{self.suffix}"

    def periodic(self):
        """[(iteration, path)] of the periodic files present, oldest first."""
        if not self.folder.is_dir():
            return []
        found = ((self._pattern.match(p.name), p) for p in self.folder.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def save_periodic(self, state, iteration):
        """Write the periodic checkpoint of ``iteration`` (every rank calls; main writes), then
        drop all but the newest ``keep``."""
        path = self.periodic_path(iteration)
        save_on_main(state, path)
        if is_main_process():
            for _, old in self.periodic()[:-self.keep]:
                old.unlink(missing_ok=True)
        logger.info(f"saved checkpoint {path}")
        return path

    def superseded(self, iteration):
        """After ``latest`` was written at ``iteration``: the periodic files it replaces go."""
        if is_main_process():
            for it, path in self.periodic():
                if it <= iteration:
                    path.unlink(missing_ok=True)
        barrier()

    def clear(self):
        """A fresh run: the periodic files of whatever ran in this folder before go (logged)."""
        stale = self.periodic()
        if is_main_process() and stale:
            logger.info(f"fresh run: removing {len(stale)} periodic checkpoint(s) of an earlier run "
                        f"in {self.folder}")
            for _, path in stale:
                path.unlink(missing_ok=True)
        barrier()

    def after_step(self, iteration, epoch, guard, state, epoch_end=False, save=True):
        """The policy after each step (see the module docstring). ``state(preempted=False)`` builds
        the checkpoint only when one is written; ``epoch`` is 1-based, for the stop line;
        ``epoch_end``: the trainer writes its ``latest`` file instead; ``save=False`` (SSD's
        --no-save) writes nothing, even at a preemption."""
        if guard is not None and guard.requested():
            where = f"epoch {epoch}, iteration {iteration}"
            if not save:
                raise Preempted(f"{guard.signal_name} at {where}; no checkpoint (--no-save)")
            watchdog.beat("checkpoint")
            path = self.save_periodic(state(preempted=True), iteration)
            raise Preempted(f"{guard.signal_name} at {where}; checkpoint {path}; run the same command "
                            "again to continue from it")
        if save and self.due(iteration) and not epoch_end:
            watchdog.beat("checkpoint")
            self.save_periodic(state(), iteration)

    def newest(self):
        """The file a resume continues from: the newest periodic one, else ``latest``; None if
        the folder has neither."""
        periodic = self.periodic()
        if periodic:
            return periodic[-1][1]
        return self.latest if self.latest.is_file() else None

    def auto_resume(self, run_config, what):
        """(path, state) of the checkpoint this run continues by itself, or (None, None) for a
        fresh start; see the module docstring for when. ``what`` names the flag that resumes
        explicitly, for the one-line refusal."""
        path = self.newest()
        restart = restart_reason()
        restarted = restart is not None
        # a preemption checkpoint is always a periodic file (save_periodic): a fresh start beside
        # an epoch-end file alone needs no load (a whole checkpoint, on every rank) to know that
        if path is None or (not restarted and path == self.latest):
            return None, None
        state = load(path)
        if not (restarted or (isinstance(state, dict) and state.get("preempted"))):
            return None, None
        check_same_run(state, run_config, path, what)
        why = restart if restarted else "it was preempted"
        logger.info(f"resuming by itself from {path} ({why})")
        return path, state


def run_config(settings, volatile, seed=None, **fixed):
    """The settings that decide what a run computes: ``settings`` less its ``volatile`` keys, plus
    ``fixed`` (world size, batch, precision) and ``seed`` when one was given (a drawn seed does not
    make two runs differ); a checkpoint of another configuration is not resumed by itself."""
    config = {k: v for k, v in settings.items() if k not in volatile}
    config.update(fixed)
    if seed is not None:
        config["seed"] = seed
    return config


def training_state(optimizer, precision, seed, config, watch, modules, preempted=False, report=None):
    """What both trainers' checkpoints hold besides the model and their own position: the
    optimizer and precision (loss scaler) states, the run's seed (drawn or given), the main
    process's and every rank's RNG and BN buffers (``rank_states``: a collective), the run
    configuration with its seed, whether a preemption wrote it, the best-metric watch and the
    MLflow run the ``RunReport`` logs to (a resume continues it)."""
    return {"optimizer": optimizer.state_dict(), "precision": precision.state_dict(), "seed": seed,
            "rng": rng_state(), "ranks": rank_states(*modules), "run_config": {**config, "seed": seed},
            "preempted": preempted, "best_metric": watch.state_dict(),
            RUN_ID_KEY: getattr(report, "mlflow_run_id", None)}


def restore_training_state(state, path, optimizer, precision, watch=None):
    """The optimizer, precision and best-metric watch of ``training_state`` (the model is the
    trainer's to load); an optimizer state of another model is one line naming ``path``."""
    if "optimizer" in state:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise UserError(f"checkpoint {path}: optimizer state does not fit this model ({exc})") from None
    precision.load_state_dict(state.get("precision", {}))
    if watch is not None and "best_metric" in state:
        watch.load_state_dict(state["best_metric"])


def restore_rng(state, *modules):
    """Each rank's own RNG and BN statistics from a checkpoint, else (another world size, an
    older file) rank 0's RNG state. Call after DDP, which broadcasts rank 0's buffers."""
    if not restore_rank_state(state.get("ranks"), *modules):
        set_rng_state(state.get("rng"))


def check_same_run(state, run_config, path, what):
    """One line when ``state`` (a checkpoint) was written by a run configured otherwise than
    ``run_config`` (a dict of the settings that decide the numbers)."""
    saved = state.get("run_config") if isinstance(state, dict) else None
    if saved is None:
        raise UserError(f"{path}: not a checkpoint of this kind of run (no run_config); it will not "
                        f"be resumed by itself: move it away, use another output folder, or {what}")
    keys = sorted(set(saved) | set(run_config))
    differ = [k for k in keys if _comparable(saved.get(k)) != _comparable(run_config.get(k))]
    if differ:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {run_config.get(k)!r}" for k in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise UserError(f"{path} belongs to a run with another configuration ({shown}{more}); "
                        f"not resuming it: use another output folder, or the same settings")


def _comparable(value):
    """Tuples and lists compare alike (a checkpoint round-trip may turn one into the other)."""
    return list(value) if isinstance(value, tuple) else value


def rank_states(*modules):
    """Every rank's RNG states and the buffers (BN statistics) of ``modules``, as a list by rank:
    what differs between ranks. DDP keeps parameters equal, but buffers are not broadcast (as in
    Habana's recipes) and each rank draws its own random numbers, so a checkpoint that held rank
    0's alone would resume the other ranks into another run. Every rank calls (a collective)."""
    mine = {"rng": rng_state(),
            "buffers": [{k: v.detach().cpu().clone() for k, v in m.named_buffers()} for m in modules]}
    return all_gather_object(mine)


def restore_rank_state(states, *modules):
    """This rank's part of ``rank_states``; False (and a warning) when the checkpoint has none
    or was written by another number of ranks, where rank 0's RNG state is all there is."""
    rank, world = get_rank(), get_world_size()
    if not states or len(states) != world:
        if world > 1:
            logger.warning(f"the checkpoint holds the state of {len(states or [])} rank(s), this run has "
                           f"{world}: resuming with rank 0's random state, so not bit-exact")
        return False
    set_rng_state(states[rank]["rng"])
    for module, buffers in zip(modules, states[rank]["buffers"]):
        for name, buf in module.named_buffers():
            buf.copy_(buffers[name])
    return True
