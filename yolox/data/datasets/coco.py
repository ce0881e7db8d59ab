"""COCO-format detection dataset (json + image folder) for YOLOX, and the source-based dataset
that ``VOCDetection`` shares with it.

Reading and cleaning follow the one policy of ``detcore.data.index`` (shared with SSD and with VOC);
this module only adds what YOLOX needs: labels scaled into the letterboxed ``img_size``, BGR images resized
with OpenCV, and an optional image cache (``--cache ram|disk``, ``yolox.data.cache``).

Labels are computed per item from the source's flat ``BoxTable`` and a letterbox ratio per image,
not stored as one array per image: loader workers forked from the main process then touch no
per-image Python object, so they share the label memory instead of copying it page by page
(upstream's ``annotations`` list of tuples is what they copied).
"""
from pathlib import Path

import cv2
import numpy as np

from accel.errors import UserError
from detcore.data.coco import CocoSource
from detcore.data.images import warn_if_truncated_jpeg
from yolox.data.cache import build_image_cache
from yolox.data.datasets.datasets_wrapper import Dataset


class SourceDataset(Dataset):
    """Letterboxed images and labels of any ``detcore`` source (``CocoSource``, ``VocSource``):
    the one implementation behind ``COCODataset`` and ``VOCDetection``, so both feed
    MosaicDetection, the trainer and the evaluators the same way."""

    def __init__(self, source, img_size=(416, 416), preproc=None, cache=False, cache_dir=None):
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
        # None, or every image decoded and resized once: 'ram' (shared by the loader workers) or
        # 'disk' (.npy files in ``cache_dir``, default beside the images); True means 'ram'
        self.cache = self._build_cache(cache, cache_dir)

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

    def _decode(self, index):
        """The image file as OpenCV decodes it (BGR uint8, its own size); OSError when it cannot be
        decoded."""
        path = self._path(index)
        img = cv2.imread(str(path))
        if img is None:
            raise OSError(0, "cannot be decoded", str(path))
        warn_if_truncated_jpeg(path)        # OpenCV decodes a cut JPEG with a grey tail, naming no file
        return img

    def _read_resized(self, index):
        """Decoded and resized to ``letterbox_shape(index)`` (no padding); OSError when the file
        cannot be decoded. The shape comes from the listed size, as the labels do, so a cached and
        an uncached image are the same array even when a file's real size differs from the listing."""
        img = self._decode(index)
        h, w = (int(v) for v in self._resized[index])
        return img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)

    def _build_cache(self, cache, cache_dir):
        """Decode every image once into the cache (threads: cv2 drops the GIL); the unreadable
        ones are counted as ``first_readable`` would count them."""
        def skip(i, exc):
            reason = getattr(exc, "strerror", None) or str(exc)
            self.source.unreadable.skip(int(i), self._path(int(i)), "" if reason == "cannot be decoded" else reason)

        return build_image_cache(cache, shapes=self._resized, read=self._read_resized, skip=skip,
                                 img_dir=self.img_dir, input_size=self.img_size, folder=cache_dir,
                                 names=[self._table.file_name_at(i) for i in range(len(self.ids))],
                                 what=f"images of {self.img_dir}")

    def _cached(self, index):
        """Image ``index`` from the cache (read-only for 'ram'), decoded again if its disk file went bad."""
        img = self.cache.pull(index)
        return self._read_resized(index) if img is None else img

    def letterbox_shape(self, index):
        """(h, w) of image ``index`` resized into ``img_size`` (what ``pull_item`` returns), from the
        listed size: no decoding."""
        return self._resized[index]

    def read_source(self, index):
        """(image, labels [N,5] xyxy+cls, i) of ``i``, the first readable image from ``index``, for
        MosaicDetection. The image is the cached array (read-only: do not modify it) or, without a
        cache, the decoded file at its own size: the mosaic and MixUp map it onto
        ``letterbox_shape(i)`` in the same warp that places it, instead of resizing it first."""
        read = self._cached if self.cache is not None else self._decode
        i, img = self.source.unreadable.first_readable(index, read)
        return img, self.load_anno(i), i

    def labels_of_readable(self, index):
        """(labels, i) that ``read_source(index)`` would give, without decoding: images already
        found unreadable are stepped over (one found later is not, which only matters for a
        mosaic tile that is not visible and so never decoded)."""
        bad, i = self.source.unreadable.bad, index
        for _ in range(len(self.ids)):
            if i not in bad:
                break
            i = (i + 1) % len(self.ids)
        return self.load_anno(i), i

    def load_anno(self, index):
        """Labels [N,5] (xyxy + class index) of image ``index``, in letterboxed coordinates (a new
        array each call)."""
        boxes, cls, _ = self._table.at(index)
        return np.concatenate([boxes * self._ratio[index], cls[:, None].astype(np.float64)], axis=1)

    def pull_item(self, index):
        """(resized BGR uint8 image, labels [N,5] xyxy+cls, (h, w) original, np.array([img_id])).

        An image that cannot be decoded is replaced by the next readable one (and counted).
        """
        if self.cache is None:
            i, img = self.source.unreadable.first_readable(index, self._read_resized)
        else:
            i, img = self.source.unreadable.first_readable(index, self._cached)
            img = img if img.flags.writeable else img.copy()     # callers may augment it in place
        h, w = self._hw[i]
        return img, self.load_anno(i), (int(h), int(w)), self.image_id(i)

    def image_id(self, index):
        """np.array([id]) of image ``index`` (the img_id that ``pull_item`` returns)."""
        return self._table.ids[index:index + 1].copy()

    def __getitem__(self, index):
        _, index = self.split_index(index)
        img, target, img_info, img_id = self.pull_item(index)
        if self.preproc is not None:
            img, target = self.preproc(img, target, self.input_dim)
        return img, target, img_info, img_id


class COCODataset(SourceDataset):
    """COCO json + images; ``pull_item`` gives the letterbox-resized image and xyxy+cls labels."""

    def __init__(self, data_dir, json_file="instances_train2017.json", name="train2017",
                 img_size=(416, 416), preproc=None, cache=False, cache_dir=None):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise UserError(f"data dir {self.data_dir} not found (expected annotations/{json_file} "
                            f"and {name}/ inside it)")
        self.json_file, self.name = json_file, name
        self.ann_file = self.data_dir / "annotations" / json_file
        source = CocoSource(self.ann_file, self.data_dir / name)
        super().__init__(source, img_size, preproc, cache, cache_dir)
