"""How far a loop has come: ``Progress`` (a dependency-free progress line for eval loops; tqdm is
not a requirement) and ``StepClock`` (both trainers' step timing for their loss lines)."""
import datetime
import sys
import time

from loguru import logger


class Progress:
    """Redraws one line on a terminal; logs at every quarter when output goes to a file or pipe."""

    def __init__(self, total, desc, enabled=True):
        self.total, self.desc, self.enabled = max(total, 1), desc, enabled
        self.tty = sys.stderr.isatty()
        self.start = time.time()
        self._next_log = 0.25

    def update(self, done):
        if not self.enabled:
            return
        frac = done / self.total
        rate = done / max(time.time() - self.start, 1e-9)
        if self.tty:
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r{self.desc} [{bar:<30}] {done}/{self.total} {rate:.1f} it/s")
            if done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif frac >= self._next_log or done >= self.total:
            logger.info(f"{self.desc}: {done}/{self.total} batches ({rate:.1f} it/s)")
            while self._next_log <= frac:
                self._next_log += 0.25


class StepClock:
    """The mean time of the training steps since the last loss line, and of the part spent
    waiting for data: the ``iter_time``, ``data_time``, img/s and ETA both trainers print.
    Timing is host wall time around each step (no device sync is added for it)."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Start a new window (after each loss line, and after a compiled run's first step,
        which is mostly compilation)."""
        self.steps, self.step_s, self.data_s = 0, 0.0, 0.0

    def add(self, step_s, data_s=0.0):
        self.steps += 1
        self.step_s += step_s
        self.data_s += data_s

    def mean(self):
        """(seconds per step, of which waiting for data) over the window."""
        n = max(self.steps, 1)
        return self.step_s / n, self.data_s / n

    def eta(self, steps_left):
        """The time ``steps_left`` more steps take at this window's pace, as H:MM:SS."""
        return str(datetime.timedelta(seconds=int(self.mean()[0] * max(steps_left, 0))))
