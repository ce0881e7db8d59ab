"""detcore.data.heap: a loader worker keeps the megabyte-sized blocks it frees (no page faults for the
next sample's), a data-set build gives its freed heap back."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from detcore.data.heap import keep_freed_heap
    kept = keep_freed_heap() if sys.argv[1] == "keep" else None
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):                                  # warm up: the first blocks fault either way
        np.ones((640, 640, 3), np.uint8).sum()
    before = faults()
    for _ in range(20):                                 # what a worker does per sample, 1.2 MB a time
        a = np.ones((640, 640, 3), np.uint8)
        b = np.empty_like(a)
        b[:] = a
        del a, b
    print(kept, (faults() - before) / 20)
""")


def faults_per_round(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    kept, per_round = out.stdout.split()
    return kept, float(per_round)


def test_kept_heap_serves_megabyte_blocks_without_new_page_faults():
    kept, with_setting = faults_per_round("keep")
    _, default = faults_per_round("default")
    assert kept == "True"
    # glibc's default unmaps each 1.2 MB block at free: ~300 faults per block, 2 blocks a round
    assert default > 400, default
    assert with_setting < 20, with_setting
