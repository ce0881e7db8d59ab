"""Preemption: SIGTERM (how schedulers and ``torchrun`` stop a job) and SIGUSR1 (what SLURM's
``--signal=USR1@SECONDS`` sends before a job's time runs out) end a run at a step boundary.

The first signal only raises a flag. The trainers ask ``PreemptionGuard.requested()`` once per
step; every rank gets the same answer (``accel.any_rank``), so all ranks finish the same step,
the main process writes one checkpoint at that iteration, and the run ends with ``Preempted``,
which ``cli_entry`` turns into one line and exit code 143 (128 + SIGTERM, for either signal).
A second signal while that happens restores the default action and ends the process at once.

Slurm: a job submitted with ``--signal=USR1@90 --requeue`` gets SIGUSR1 90 s before its time
runs out (or from ``scancel --signal=USR1``). After the checkpoint, rank 0 requeues the job
(``scontrol requeue``), once, and the requeued job resumes by itself from that checkpoint
(``detcore.training.checkpoints``). Only SIGUSR1 requeues: SIGTERM is also how ``scancel`` cancels a job
and how Slurm itself preempts one (it requeues by itself where its preemption mode says so),
and requeueing then would undo a cancel. When any rank got SIGTERM, the run is not requeued.
"""
import os
import re
import shutil
import signal
import subprocess
import threading

from loguru import logger

from accel import errors, launch
from accel.distributed import destroy, get_rank, max_over_ranks
from accel.errors import PREEMPTED_EXIT_CODE, Preempted, one_line  # noqa: F401  (re-exported)

_agreed = [None]     # the signal every rank agreed on at the last preemption (SIGTERM wins)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionGuard:
    """Catches SIGTERM/SIGUSR1 for the life of a training run (``close()`` puts the previous
    handlers back). Handlers can only be installed from the main thread; elsewhere (a trainer
    driven from a worker thread of a user's program) the guard stays inactive and says so."""

    def __init__(self):
        self.signum = None
        self.agreed = None
        self._previous = {}
        _agreed[0] = None
        errors.on_end(preempted=end_preempted)
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training outside the main thread: SIGTERM/SIGUSR1 end the run without "
                           "a preemption checkpoint")
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:          # a second signal: stop now, the default way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        logger.warning(f"{signal.Signals(signum).name} received: finishing this step, then writing "
                       "a checkpoint and stopping")

    def requested(self):
        """Whether any rank has been signalled (a collective: call it on every rank, same step).
        Every rank learns the same signal: the largest number, so SIGTERM (15) wins over
        SIGUSR1 (10) and a cancel is never turned into a requeue."""
        agreed = max_over_ranks(self.signum or 0)
        if agreed:
            self.agreed = _agreed[0] = agreed
        return bool(agreed)

    @property
    def signal_name(self):
        if self.agreed:
            return signal.Signals(self.agreed).name
        return signal.Signals(self.signum).name if self.signum else "a signal on another rank"

    def close(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def end_preempted():
    """``cli_entry``'s end of a preempted run, on every rank after the checkpoint: requeue the
    Slurm job if SIGUSR1 asked for it, then leave the process group together. Returns what to
    add to the one line.

    Slurm answers a requeue by sending SIGTERM to every process of the job, and ``srun
    --kill-on-bad-exit`` ends the step as soon as one task exits non-zero. So every rank ignores
    SIGTERM from here on (the checkpoint is written; each exits 143 by itself right after) and
    rank 0 requeues *before* the barrier of ``destroy``, while no rank has exited yet."""
    signum, _agreed[0] = _agreed[0], None          # once per signal
    job = launch.detect().slurm_job_id
    note = ""
    if signum == signal.SIGUSR1 and job:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note = requeue(job) if get_rank() == 0 else f"; rank 0 requeues Slurm job {job}"
    destroy()
    return note


def requeue(job, run=subprocess.run):
    """``scontrol requeue JOB`` when JOB is a batch job submitted with ``--requeue``; returns
    what to add to the preempted line (also why it was not requeued)."""
    if shutil.which("scontrol") is None:
        logger.warning("SIGUSR1 in Slurm job {} but no scontrol on this node: not requeued", job)
        return f"; Slurm job {job} NOT requeued (no scontrol on this node): submit it again to continue"
    shown = run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True)
    fields = dict(re.findall(r"(\w+)=(\S*)", shown.stdout))
    if shown.returncode != 0 or fields.get("BatchFlag") != "1" or fields.get("Requeue") != "1":
        why = ("it was not submitted with --requeue" if shown.returncode == 0 and fields.get("BatchFlag") == "1"
               else "it is not a requeueable batch job" if shown.returncode == 0
               else one_line(shown.stderr) or "scontrol show job failed")
        return f"; Slurm job {job} not requeued ({why}): submit it again to continue"
    done = run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        return f"; Slurm job {job} NOT requeued ({one_line(done.stderr)}): submit it again to continue"
    logger.info(f"requeued Slurm job {job}")
    return f"; Slurm job {job} requeued: it resumes by itself from that checkpoint"


def shield_worker(worker_id=None):
    """DataLoader ``worker_init_fn``: a loader worker outlives the preemption signals a
    scheduler sends to every process of a job (SLURM's scancel, a preemption), so the training
    process can finish its step and write its checkpoint before it stops its workers. A worker
    would otherwise die at once and take the run down with it (the loader reports dead workers
    at any moment). SIGTERM from the training process itself (how multiprocessing and the
    loader end a worker) still ends it at once, as torch's own worker handler does; SIGUSR1 is
    ignored."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})   # the thread below inherits it
    threading.Thread(target=_obey_parent_only, args=(os.getppid(),), daemon=True,
                     name="sigterm-from-parent-only").start()


def _obey_parent_only(parent):
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            os._exit(0)
