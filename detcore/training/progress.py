"""A dependency-free progress indicator for eval loops (tqdm is not a requirement)."""
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
