"""Decoded, letterbox-resized training images kept so that each is decoded once per run (``--cache
ram``) or once ever (``--cache disk``), as upstream YOLOX HEAD's ``--cache [ram|disk]``.

Why this shape:
- RAM: ONE flat uint8 buffer in an anonymous shared mapping (``mmap.mmap(-1, n)`` is MAP_SHARED),
  filled before the DataLoader forks its workers. Every worker maps the same pages, so the cache
  costs its size once, not once per worker: upstream keeps a Python list of arrays, whose pages a
  forked worker shares only until something writes near them, and which a spawned worker gets a
  pickled copy of. Items are read-only views (``pull`` never copies; callers that modify copy).
- Disk: one ``.npy`` per image in a folder (default: ``img_resized_cache_<images folder>_<h>x<w>``
  beside the images folder, the input size in the name because the arrays depend on it), each
  written to a temporary name and renamed into place (``os.replace``), so a killed run or two ranks
  building at once never leave a half-written file that a later run would trust. A later run
  re-decodes only the images whose cache file is missing, of the wrong size or older than the image.

Both store exactly what the uncached path decodes (``read(i)``: the image resized to the letterbox
shape of ``shapes[i]``), so the augmentations see the same pixels with or without a cache.
"""
import io
import mmap
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import UserError
from detcore.data.heap import return_freed_heap
from detcore.files import why_not_written

CACHE_KINDS = ("ram", "disk")


def cache_kind(value):
    """Normalise a cache argument: None/False/"" -> None, True/"ram" -> "ram", "disk" -> "disk";
    anything else is a UserError (the CLI's ``--cache`` and Python callers both come through here)."""
    if value is None or value is False or value == "" or value == "none":
        return None
    if value is True:
        return "ram"
    if isinstance(value, str) and value.lower() in CACHE_KINDS:
        return value.lower()
    raise UserError(f"--cache {value!r}: expected 'ram' (the default of a bare --cache) or 'disk'")


def _threads():
    return max(1, min(8, os.cpu_count() or 1))


def _mem_available():
    """MemAvailable of /proc/meminfo in bytes, or None where there is no such file."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RamImageCache:
    """All images in one shared read-only byte buffer (module docstring).

    ``shapes``: [N, 2] (h, w) of each resized image; ``read(i)`` returns image ``i`` at that shape
    (uint8 HxWx3) or raises OSError/ValueError when it cannot be decoded; ``skip(i, reason)`` is
    told about each such image. ``pull(i)`` is then the image as a read-only view, or None for one
    that could not be decoded.
    """

    def __init__(self, shapes, read, skip, what="images"):
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        sizes = shapes[:, 0] * shapes[:, 1] * 3
        self.offsets = np.zeros(len(shapes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.shapes, self.nbytes = shapes, int(self.offsets[-1])
        available = _mem_available()
        if available is not None and self.nbytes > available:
            raise UserError(f"--cache ram needs {self.nbytes / 2**30:.1f} GiB for {len(shapes)} {what} but "
                            f"{available / 2**30:.1f} GiB of RAM is available: use --cache disk or no cache")
        logger.info(f"caching {len(shapes)} {what} in RAM ({self.nbytes / 2**20:.0f} MiB, shared by "
                    "the loader workers)")
        # an anonymous mmap is MAP_SHARED: forked workers see the same physical pages
        self._map = mmap.mmap(-1, max(self.nbytes, 1))
        self.buffer = np.frombuffer(self._map, dtype=np.uint8, count=self.nbytes)
        self.present = np.zeros(len(shapes), dtype=bool)

        def fill(i):
            try:
                img = read(i)
            except (OSError, ValueError) as exc:
                return i, exc
            self.buffer[self.offsets[i]:self.offsets[i + 1]] = img.reshape(-1)
            return i, None

        with ThreadPoolExecutor(max_workers=_threads()) as pool:    # cv2 drops the GIL
            for i, exc in pool.map(fill, range(len(shapes))):
                if exc is None:
                    self.present[i] = True
                else:
                    skip(i, exc)
        self.buffer.flags.writeable = False
        # the decoding threads' freed buffers stay in their malloc arenas (measured: ~25 MB of RSS
        # at 128 images) that every forked worker would map too: give them back before the fork
        return_freed_heap()

    def pull(self, index):
        """Image ``index`` as a read-only view into the shared buffer (None: not decodable)."""
        if not self.present[index]:
            return None
        h, w = self.shapes[index]
        return self.buffer[self.offsets[index]:self.offsets[index + 1]].reshape(h, w, 3)

    def __reduce__(self):
        raise UserError("the RAM image cache is shared with fork()ed loader workers only; with a "
                        "spawn/forkserver multiprocessing context use --cache disk")


def _npy_bytes(h, w):
    """File size of ``np.save`` of a C-contiguous uint8 (h, w, 3) array: its format-1.0 header
    (padded to a multiple of 64 bytes) plus the pixels."""
    key = (int(h), int(w))
    if key not in _HEADER_BYTES:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (*key, 3)})
        _HEADER_BYTES[key] = buf.tell()
    return _HEADER_BYTES[key] + key[0] * key[1] * 3


_HEADER_BYTES = {}


def default_disk_folder(img_dir, input_size):
    """``img_resized_cache_<images folder name>_<h>x<w>`` beside the images folder."""
    img_dir = Path(img_dir)
    return img_dir.parent / f"img_resized_cache_{img_dir.name}_{int(input_size[0])}x{int(input_size[1])}"


class DiskImageCache:
    """One ``.npy`` per image in ``folder`` (module docstring): ``names[i]`` is image ``i``'s file
    name relative to its images folder (sub-folders become ``__``), ``sources[i]`` its path (for
    the staleness check), ``shapes``/``read``/``skip`` as ``RamImageCache``."""

    def __init__(self, folder, names, sources, shapes, read, skip, what="images"):
        self.folder = Path(folder)
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        self.files = [self.folder / (str(n).replace("/", "__").replace(os.sep, "__") + ".npy") for n in names]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--cache disk: cannot create the cache folder {self.folder} ({exc.strerror}); "
                            "name a writable one with the exp option cache_dir DIR") from None
        todo = [i for i in range(len(self.files)) if not self._fresh(i, sources[i])]
        if todo:
            self._check_writable()
        need = sum(_npy_bytes(*self.shapes[i]) for i in todo)
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise UserError(f"--cache disk needs {need / 2**30:.1f} GiB more in {self.folder} but "
                            f"{free / 2**30:.1f} GiB is free: name another folder with cache_dir DIR")
        logger.info(f"disk cache {self.folder}: {len(self.files) - len(todo)} of {len(self.files)} {what} "
                    f"cached, writing {len(todo)} ({need / 2**20:.0f} MiB)")
        self.present = np.ones(len(self.files), dtype=bool)

        def write(i):
            try:
                img = read(i)
            except (OSError, ValueError) as exc:
                return i, exc
            tmp = None
            try:
                fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npy", dir=self.folder)
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.ascontiguousarray(img, dtype=np.uint8))
                os.replace(tmp, self.files[i])           # atomic: never a half-written cache file
            except OSError as exc:                       # e.g. the disk filled up half-way
                if tmp:
                    Path(tmp).unlink(missing_ok=True)
                raise self._unwritable(exc) from None
            except BaseException:
                if tmp:
                    Path(tmp).unlink(missing_ok=True)
                raise
            return i, None

        with ThreadPoolExecutor(max_workers=_threads()) as pool:
            for i, exc in pool.map(write, todo):
                if exc is not None:
                    self.present[i] = False
                    skip(i, exc)
        self.nbytes = int(sum(int(h) * int(w) * 3 for h, w in self.shapes[self.present]))

    def _unwritable(self, exc):
        """The one-line error for a cache folder that cannot take the files (read-only, full)."""
        return UserError(f"--cache disk: cannot write to the cache folder {self.folder} "
                         f"({why_not_written(exc)}): name a writable folder with the exp option "
                         "cache_dir DIR, or use --cache ram")

    def _check_writable(self):
        """Create and remove one temporary file, so a read-only folder (which ``mkdir(exist_ok=True)``
        does not notice) is one line before any image is decoded, not a traceback from a worker
        thread."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npy", dir=self.folder)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _fresh(self, i, source):
        """The cache file exists, holds an array of the expected shape (by its size) and is not
        older than the image it was made from."""
        try:
            st = self.files[i].stat()
        except OSError:
            return False
        if st.st_size != _npy_bytes(*self.shapes[i]):
            return False
        try:
            return st.st_mtime >= os.stat(source).st_mtime
        except OSError:
            return True                                  # the image went away: the cache still holds it

    def pull(self, index):
        """Image ``index`` read from its file (None: not decodable, or the file went bad)."""
        if not self.present[index]:
            return None
        try:
            img = np.load(self.files[index], allow_pickle=False)
        except (OSError, ValueError):
            return None
        if img.shape != (*self.shapes[index], 3) or img.dtype != np.uint8:
            return None
        return img


def build_image_cache(kind, *, shapes, read, skip, img_dir, names, input_size, folder=None, what="images"):
    """The cache ``kind`` ('ram' / 'disk', see ``cache_kind``) of these images, or None."""
    kind = cache_kind(kind)
    if kind is None:
        return None
    if kind == "ram":
        return RamImageCache(shapes, read, skip, what)
    folder = Path(folder) if folder else default_disk_folder(img_dir, input_size)
    sources = [Path(img_dir) / n for n in names]
    return DiskImageCache(folder, names, sources, shapes, read, skip, what)
