"""COCO-format detection dataset (json + image folder) for YOLOX, and the source-based dataset
that ``VOCDetection`` shares with it.

Reading and cleaning follow the one policy of ``detcore.coco`` (shared with SSD and with VOC);
this module only adds what YOLOX needs: labels scaled into the letterboxed ``img_size``, BGR images resized
with OpenCV, and an optional RAM cache.

Labels are computed per item from the source's flat ``BoxTable`` and a letterbox ratio per image,
not stored as one array per image: loader workers forked from the main process then touch no
per-image Python object, so they share the label memory instead of copying it page by page
(upstream's ``annotations`` list of tuples is what they copied).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from loguru import logger

from accel.errors import UserError
from detcore.coco import CocoSource
from yolox.data.datasets.datasets_wrapper import Dataset


class SourceDataset(Dataset):
    """Letterboxed images and labels of any ``detcore`` source (``CocoSource``, ``VocSource``):
    the one implementation behind ``COCODataset`` and ``VOCDetection``, so both feed
    MosaicDetection, the trainer and the evaluators the same way."""

    def __init__(self, source, img_size=(416, 416), preproc=None, cache=False):
        super().__init__(img_size)
        self.source, self.img_size, self.preproc = source, tuple(img_size), preproc
        self.img_dir = source.img_dir
        self.class_ids, self.ids = source.class_ids, source.ids
        self._classes = source.class_names
        self._table = source.table
        # per image: (h, w) as listed, the letterbox ratio and the resized (h, w), as upstream's
        # min(H / h, W / w) and int(h * r) (float64, so the labels equal its bit for bit)
        self._hw = self._table.hw.astype(np.int64)
        self._ratio = np.minimum(self.img_size[0] / self._hw[:, 0], self.img_size[1] / self._hw[:, 1])
        self._resized = (self._hw * self._ratio[:, None]).astype(np.int64)
        self.imgs = self._cache_images() if cache else None

    @property
    def coco(self):
        """The source's pycocotools index (what COCO scoring reads), built on first use."""
        return self.source.coco

    @property
    def unreadable(self):
        return self.source.unreadable.bad

    def __len__(self):
        return len(self.ids)

    def box_counts(self):
        """Boxes per image [N] (MosaicDetection's MixUp draws from images that have some)."""
        return self._table.counts

    def _path(self, index):
        return self.img_dir / self._table.file_name_at(index)

    def _read_resized(self, index):
        """Letterbox-resized BGR image (no padding); OSError when the file cannot be decoded."""
        path = self._path(index)
        img = cv2.imread(str(path))
        if img is None:
            raise OSError(0, "cannot be decoded", str(path))
        r = min(self.img_size[0] / img.shape[0], self.img_size[1] / img.shape[1])
        size = (int(img.shape[1] * r), int(img.shape[0] * r))
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR) if size != img.shape[1::-1] else img

    def _try_read(self, index):
        try:
            return self._read_resized(index)
        except OSError:
            return None

    def _cache_images(self):
        """Read every image once into RAM (resized); decoding runs in threads (cv2 drops the GIL)."""
        mb = float((self._resized.prod(axis=1) * 3).sum()) / 2**20
        logger.info(f"caching {len(self.ids)} images of {self.img_dir} in RAM (~{mb:.0f} MB)")
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            imgs = list(pool.map(self._try_read, range(len(self.ids))))
        for i in np.flatnonzero([img is None for img in imgs]):
            self.source.unreadable.skip(int(i), self._path(int(i)))
        return imgs

    def load_anno(self, index):
        """Labels [N,5] (xyxy + class index) of image ``index``, in letterboxed coordinates (a new
        array each call)."""
        boxes, cls, _ = self._table.at(index)
        return np.concatenate([boxes * self._ratio[index], cls[:, None].astype(np.float64)], axis=1)

    def pull_item(self, index):
        """(resized BGR uint8 image, labels [N,5] xyxy+cls, (h, w) original, np.array([img_id])).

        An image that cannot be decoded is replaced by the next readable one (and counted).
        """
        read = (lambda i: self.imgs[i].copy()) if self.imgs is not None else self._read_resized
        i, img = self.source.unreadable.first_readable(index, read)
        h, w = self._hw[i]
        return img, self.load_anno(i), (int(h), int(w)), self._table.ids[i:i + 1].copy()

    def __getitem__(self, index):
        _, index = self.split_index(index)
        img, target, img_info, img_id = self.pull_item(index)
        if self.preproc is not None:
            img, target = self.preproc(img, target, self.input_dim)
        return img, target, img_info, img_id


class COCODataset(SourceDataset):
    """COCO json + images; ``pull_item`` gives the letterbox-resized image and xyxy+cls labels."""

    def __init__(self, data_dir, json_file="instances_train2017.json", name="train2017",
                 img_size=(416, 416), preproc=None, cache=False):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise UserError(f"data dir {self.data_dir} not found (expected annotations/{json_file} "
                            f"and {name}/ inside it)")
        self.json_file, self.name = json_file, name
        self.ann_file = self.data_dir / "annotations" / json_file
        source = CocoSource(self.ann_file, self.data_dir / name)
        super().__init__(source, img_size, preproc, cache)
