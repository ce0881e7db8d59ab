"""glibc heap settings for the two kinds of process detkit runs: a data-set build that frees a
large parse and should give it back, and a loader worker that allocates and frees the same few
megabytes per sample and should keep them. Both go through ``ctypes`` to glibc; elsewhere (musl,
macOS, Windows) they do nothing: the code is correct either way, only slower or larger."""
import ctypes

M_TRIM_THRESHOLD = -1          # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest accepted mmap threshold on 64-bit


def _libc(name):
    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError, TypeError):       # not glibc
        return None


def return_freed_heap():
    """Give the heap pages that reading freed back to the OS (``malloc_trim``). The parse's
    temporaries are freed below the arrays that stay, so glibc keeps them mapped: measured at
    118k images, 190 MB of RSS (83 MB with the trim, 272 without) that every training process
    would carry and every forked worker would map."""
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)


def keep_freed_heap(trim_bytes=64 << 20):
    """In this process, serve allocations up to 32 MB from the heap and keep up to ``trim_bytes``
    of freed heap instead of returning it; returns whether glibc took both settings.

    Why (a YOLOX loader worker): each sample allocates and frees several 1.2-4.9 MB images (canvas,
    warp, MixUp window, HSV). glibc's default serves such blocks with mmap and unmaps them at free,
    so every sample faulted its pages in again: with 2 workers and ``--cache ram`` on the 2-core
    Intel Xeon (2026-12-06) the workers took ~650 page faults and 5.6 ms of CPU per image, and
    ~335 and 4.9-5.0 ms with these settings. The cost is that a worker keeps its peak working set
    mapped: main + 4 workers went from 623 to 670 MB of summed PSS (bench/yolox_data.py)."""
    mallopt = _libc("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_bytes)))
