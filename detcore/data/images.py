"""Image files as files: which names are images, listing a folder's, and probes that read a
header or a tail, never the pixels.

One home because three readers list images: the YOLO reader (a split given as a folder), the
demos' ``--path`` and quantisation's ``--calib-data``; with a list each they disagreed about
which files are images. ``header_size`` (the size from the header; PIL decodes no pixels) serves
the YOLO reader, which has no sizes in its labels, and the data check. ``jpeg_truncated`` /
``warn_if_truncated_jpeg`` name a JPEG cut short: it still decodes in OpenCV, its missing tail
grey, and libjpeg's only word is "Premature end of JPEG file" on stderr, naming no file, so the
first one a run reads is named in a warning and the data check lists them all.

Torch-free and light (PIL is imported on use): ``detcore.deploy`` lists images through here.
"""
import mmap
import os
from pathlib import Path

from loguru import logger

# The one list of image suffixes, Ultralytics' IMG_FORMATS: the YOLO reader must accept every
# image Ultralytics accepts (a data set must not lose images by moving between the two), and the
# demos and calibration must list what they can read, which this list is too: OpenCV decodes by
# content (an MPO is a JPEG, a DNG a TIFF container), and a file it cannot decode (HEIC: this
# OpenCV build has no codec for it) is skipped as any unreadable image is (the demo names it).
IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")


def is_image(path):
    """True when the name of ``path`` ends in an image suffix (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def images_under(folder):
    """Every image file under ``folder``, recursively, sorted (as Paths)."""
    return sorted(p for p in Path(folder).rglob("*") if is_image(p) and p.is_file())


JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_TAIL_BYTES = 4096
# One byte shared by this process and every loader worker it forks (an anonymous mmap is
# MAP_SHARED): set once a truncated JPEG has been named, so a run names one, not one per worker
# or per epoch of re-forked workers. A spawned worker imports its own (then one per worker).
_TRUNCATED_NAMED = mmap.mmap(-1, 1)


def header_size(path):
    """(width, height) of an image file from its header (PIL's ``open`` decodes no pixels); None
    when there is no file or no header PIL can read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def jpeg_truncated(path):
    """True when ``path`` starts as a JPEG (SOI, FF D8) but does not end with its end-of-image
    marker (EOI, FF D9) once trailing zero bytes (padding some writers add) are stripped: a file
    cut short by a copy or a download. Reads the first 2 and the last 4 KB; decodes nothing, so
    it costs one small read (nothing, when the file was just decoded and is in the page cache).
    False for other formats; OSError when the file cannot be read. A JPEG with data appended
    after its end marker (some cameras write a trailer) reads as truncated too."""
    with open(path, "rb") as f:
        if f.read(2) != JPEG_SOI:
            return False
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - _TAIL_BYTES, 2))
        tail = f.read().rstrip(b"\0")
    return not tail.endswith(JPEG_EOI)


def warn_if_truncated_jpeg(path):
    """Name ``path`` in a warning when it is a truncated JPEG and none was named before in this
    run (see ``_TRUNCATED_NAMED``). Called right after an image decoded: OpenCV decodes such a
    file with a grey tail, and libjpeg's "Premature end of JPEG file" on stderr names no file.
    Once one is named the check is skipped, so it costs nothing for the rest of the run."""
    if _TRUNCATED_NAMED[0]:
        return
    try:
        truncated = jpeg_truncated(path)
    except OSError:
        return                              # it just decoded: a failing re-read is not this check's news
    if truncated:
        _TRUNCATED_NAMED[0] = 1
        logger.warning(f"{path} is a truncated JPEG (no end-of-image marker): it decodes with a grey "
                       "tail and is used as it is; only the first such file is named, "
                       "detkit-check-data lists them all")
