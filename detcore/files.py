"""Writing a run's files the same way everywhere: whole or not at all, and one line when it fails.

- ``write_atomic`` / ``replace_atomic``: a temp file beside the target, fsync, rename; a crash
  mid-write leaves the previous file intact, a full disk or a read-only folder is one
  ``UserError`` naming the path (checkpoints, csv tables, PNGs and converted data all go through it);
- ``read_rows`` / ``write_rows``: the csv tables (results.csv, results_per_class.csv) that a
  resumed run continues: rows of epochs it will redo are dropped, columns are the union in order;
- ``pyplot`` / ``save_png``: matplotlib on first use (Agg backend: no display), one warning
  line when it is not installed, PNGs written atomically.

Torch-free, so the deploy side (``detcore.deploy``) writes through the same code.
"""
import csv
import errno
import io
import os
import re
import tempfile
from pathlib import Path

from loguru import logger

from accel.errors import UserError

_REASONS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded"}

# how torch's zip writer (PytorchStreamWriter) says that the bytes did not reach the file
_ZIP_WRITE_FAILED = re.compile(r"inline_container|PytorchStreamWriter|unexpected pos|file write failed")


def why_not_written(exc):
    """The reason of an OSError from writing, in words."""
    return _REASONS.get(exc.errno, exc.strerror or str(exc))


def make_output_dir(path):
    """Create an output folder; a read-only or full file system is one line naming it."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {path}: {why_not_written(exc)}") from None


def _discard(tmp):
    if tmp and os.path.exists(tmp):
        os.unlink(tmp)


def write_atomic(path, write):
    """Run ``write(file)`` on a temp file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file intact instead of a truncated one; a full disk
    or a read-only folder is one UserError naming the path.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp's 0600 would hide results from others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise UserError(f"cannot write {path}: {why_not_written(exc)} "
                        "(the previous file, if any, is intact)") from None
    except RuntimeError as exc:           # torch.save's zip writer reports a full disk this way
        _discard(tmp)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not _ZIP_WRITE_FAILED.search(first):
            raise
        raise UserError(f"cannot write {path}: the write failed, most likely the disk is full "
                        f"({first[:120]}; the previous file, if any, is intact)") from None
    except BaseException:
        _discard(tmp)
        raise


def replace_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(data))


def read_rows(path, before_epoch=None):
    """The rows of a csv table written by ``write_rows`` ([] when there is none); with
    ``before_epoch``, only rows of earlier epochs (and rows without one): what a resumed run keeps
    of the table before it writes the epochs it redoes."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if before_epoch is None:
        return rows
    return [r for r in rows if r.get("epoch") in (None, "") or int(float(r["epoch"])) < before_epoch]


def format_row(row):
    """Floats to 6 significant digits, as every table of a run prints them."""
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}


def write_rows(path, rows):
    """Write ``rows`` (dicts) as a csv table atomically; the columns are every key, in the order
    first seen (a column that appears later, e.g. the ``val/`` losses, is blank before)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    replace_atomic(path, text.getvalue().encode())
    return Path(path)


def pyplot(what=None):
    """matplotlib.pyplot with the Agg backend. When matplotlib is not installed: with ``what``
    (the plot's name) one warning line and None, as a plot is never worth failing a run for;
    without, the ImportError, for a caller that says it its own way."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if what is None:
            raise
        logger.warning(f"matplotlib is not installed: {what} not drawn (pip install matplotlib)")
        return None
    return plt


def save_png(fig, path, dpi):
    """Write a matplotlib figure as a PNG atomically and close it; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    replace_atomic(path, buf.getvalue())
    return Path(path)
