"""tools/train.py (YOLOX) with one fault injected on one rank, for tests/test_watchdog.py.

Usage: ``FAULT=MODE FAULT_RANK=R faulty_train.py TRAIN_ARGS...`` under any launcher. Modes:
- ``worker_sleeps``: on rank R, the training loader's worker sleeps forever once it has
  produced 6 samples (mid-epoch in the drill's tiny run): the rank waits for a batch that
  never comes while the others wait in the step's all-reduce;
- ``eval_raises``: on rank R, reading a val2017 image raises (a corrupt image) during the
  distributed evaluation;
- ``save_fails``: rank 0's second checkpoint write finds the disk full (``OSError`` ENOSPC from
  the write, turned into the one-line UserError as on a real full disk), while the others wait
  at the checkpoint's barrier.
The rank comes from ``RANK``, which every launcher path exports before the workers start.
"""
import errno
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from yolox.data.datasets import coco as coco_data  # noqa: E402
from yolox.data.datasets.mosaicdetection import MosaicDetection  # noqa: E402

FAULT, FAULT_RANK = os.environ["FAULT"], int(os.environ.get("FAULT_RANK", "1"))


def rank():
    return int(os.environ.get("RANK", "0"))


def inject():
    if FAULT == "worker_sleeps":
        original = MosaicDetection.__getitem__
        served = [0]

        def getitem(self, index):
            served[0] += 1
            if rank() == FAULT_RANK and served[0] > 6:
                time.sleep(10 ** 6)          # an endless wait in a data worker
            return original(self, index)

        MosaicDetection.__getitem__ = getitem
    elif FAULT == "eval_raises":
        original = coco_data.SourceDataset.pull_item

        def pull_item(self, index):
            path = self._path(index)
            if rank() == FAULT_RANK and "val2017" in str(path):
                raise ValueError(f"corrupt image {Path(path).name}")
            return original(self, index)

        coco_data.SourceDataset.pull_item = pull_item
    elif FAULT == "save_fails":
        from detcore.training import checkpoints as checkpoint

        original = checkpoint.write_atomic
        writes = [0]

        def write(path, fill):
            writes[0] += 1
            if writes[0] == 2:
                return original(path, lambda f: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
            return original(path, fill)

        checkpoint.write_atomic = write
    else:
        raise SystemExit(f"unknown FAULT {FAULT!r}")


if __name__ == "__main__":
    inject()
    from yolox.tools.train import main

    main(sys.argv[1:])
