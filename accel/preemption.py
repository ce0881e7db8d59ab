"""Preemption: SIGTERM (how schedulers and ``torchrun`` stop a job) and SIGUSR1 (what SLURM's
``--signal=USR1@SECONDS`` sends before a job's time runs out) end a run at a step boundary.

The first signal only raises a flag. The trainers ask ``PreemptionGuard.requested()`` once per
step; every rank gets the same answer (``accel.any_rank``), so all ranks finish the same step,
the main process writes one checkpoint at that iteration, and the run ends with ``Preempted``,
which ``cli_entry`` turns into one line and exit code 143 (128 + SIGTERM, for either signal).
A second signal while that happens restores the default action and ends the process at once.
"""
import os
import signal
import threading

from loguru import logger

from accel.distributed import any_rank
from accel.errors import PREEMPTED_EXIT_CODE, Preempted  # noqa: F401  (re-exported)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionGuard:
    """Catches SIGTERM/SIGUSR1 for the life of a training run (``close()`` puts the previous
    handlers back). Handlers can only be installed from the main thread; elsewhere (a trainer
    driven from a worker thread of a user's program) the guard stays inactive and says so."""

    def __init__(self):
        self.signum = None
        self._previous = {}
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
        """Whether any rank has been signalled (a collective: call it on every rank, same step)."""
        return any_rank(self.signum is not None)

    @property
    def signal_name(self):
        return signal.Signals(self.signum).name if self.signum else "a signal on another rank"

    def close(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


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
