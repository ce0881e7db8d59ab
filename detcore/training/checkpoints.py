"""Where a run's checkpoints go and which one a run continues from, the same for both trainers.

- Periodic checkpoints: every ``every`` iterations (and at a preemption) the main process writes
  ``<prefix><iteration:08d><suffix>`` atomically (``accel.checkpoint``: a crash mid-write leaves
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
"""
import re
from pathlib import Path

from loguru import logger

from accel import all_gather_object, barrier, get_rank, get_world_size, is_main_process
from accel.distributed import restart_reason
from accel.checkpoint import load as load_checkpoint
from accel.errors import UserError
from detcore.training.toolbox import rng_state, save_on_main, set_rng_state


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
        state = load_checkpoint(path)
        if not (restarted or (isinstance(state, dict) and state.get("preempted"))):
            return None, None
        check_same_run(state, run_config, path, what)
        why = restart if restarted else "it was preempted"
        logger.info(f"resuming by itself from {path} ({why})")
        return path, state


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
