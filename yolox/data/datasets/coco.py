"""COCO-format detection dataset (json + image folder) read through pycocotools.

Layout: ``data_dir/annotations/<json_file>`` and ``data_dir/<name>/<file_name>``. Labels are
converted once at start-up, vectorised over all annotations: xywh -> xyxy, clipped to the image,
zero/negative-size boxes dropped (with a count), class ids mapped from sorted category ids to
0..K-1, then scaled into the letterboxed ``img_size``. Images without boxes stay as negatives.
"""
import contextlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from loguru import logger
from pycocotools.coco import COCO

from accel.errors import UserError
from yolox.data.datasets.datasets_wrapper import Dataset

_IMAGE_KEYS = ("id", "width", "height")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")


def _first_bad(entries, keys):
    """Index of the first entry that is not a dict holding all ``keys`` (None when all are fine)."""
    return next((i for i, e in enumerate(entries) if not isinstance(e, dict) or not all(k in e for k in keys)), None)


def load_coco(ann_file):
    """Parse and sanity-check an instances json, then build a pycocotools COCO index (quietly)."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UserError(f"annotation file {ann_file} not found")
    try:
        data = json.loads(ann_file.read_bytes())
    except json.JSONDecodeError as exc:
        raise UserError(f"annotation file {ann_file} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"annotation file {ann_file} cannot be read ({exc})") from exc
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in lists):
        raise UserError(f"annotation file {ann_file} is not COCO instances json (expected an object with "
                        "'images', 'annotations' and 'categories' lists)")
    if not data.get("images"):
        raise UserError(f"annotation file {ann_file} has no images")
    if not data.get("categories"):
        raise UserError(f"annotation file {ann_file} has no categories")
    data.setdefault("annotations", [])
    for key, required in (("images", _IMAGE_KEYS), ("annotations", _ANN_KEYS), ("categories", ("id",))):
        bad = _first_bad(data[key], required)
        if bad is not None:
            raise UserError(f"annotation file {ann_file}: {key}[{bad}] lacks one of {', '.join(required)}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _file_size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


class COCODataset(Dataset):
    """COCO json + images; ``pull_item`` gives the letterbox-resized image and xyxy+cls labels."""

    def __init__(self, data_dir, json_file="instances_train2017.json", name="train2017",
                 img_size=(416, 416), preproc=None, cache=False):
        super().__init__(img_size)
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise UserError(f"data dir {self.data_dir} not found (expected annotations/{json_file} "
                            f"and {name}/ inside it)")
        self.json_file, self.name, self.img_size, self.preproc = json_file, name, tuple(img_size), preproc
        self.ann_file = self.data_dir / "annotations" / json_file
        self.img_dir = self.data_dir / name
        self.coco = load_coco(self.ann_file)
        self.class_ids = sorted(self.coco.getCatIds())
        self._classes = tuple(c.get("name", str(c["id"])) for c in self.coco.loadCats(self.class_ids))
        if not self.img_dir.is_dir():
            raise UserError(f"image folder {self.img_dir} not found (images listed in {self.ann_file})")
        self.ids = self._present_image_ids(self.coco.getImgIds())
        self.annotations = self._load_coco_annotations()
        self.unreadable = set()
        self.imgs = self._cache_images() if cache else None

    def __len__(self):
        return len(self.ids)

    def _file_name(self, img_id):
        info = self.coco.imgs[img_id]
        return info.get("file_name", f"{img_id:012}.jpg")

    def _present_image_ids(self, ids):
        """Drop listed images whose file is missing or empty; most of the set missing is an error."""
        sizes = np.array([_file_size(self.img_dir / self._file_name(i)) for i in ids])
        bad = np.flatnonzero(sizes <= 0)
        if len(bad):
            example = self.img_dir / self._file_name(ids[bad[0]])
            msg = f"{len(bad)} of {len(ids)} images listed in {self.ann_file} are missing or empty (e.g. {example})"
            if 2 * len(bad) > len(ids):
                raise UserError(msg)
            logger.warning(f"skipping {msg}")
        return [ids[i] for i in np.flatnonzero(sizes > 0)]

    def _load_coco_annotations(self):
        """Per image: (labels [N,5] xyxy+cls scaled to img_size, (h, w), resized (h, w), file name)."""
        infos = self.coco.loadImgs(self.ids)
        try:
            hw = np.array([(im["height"], im["width"]) for im in infos], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise UserError(f"annotation file {self.ann_file}: image width and height must be numbers") from exc
        row = {img_id: i for i, img_id in enumerate(self.ids)}
        anns = [a for a in self.coco.dataset["annotations"] if not a.get("iscrowd", 0) and a["image_id"] in row]
        pos = np.array([row[a["image_id"]] for a in anns], dtype=np.int64)
        if not (hw > 0).all():
            bad = self.ids[int(np.argmin((hw > 0).all(axis=1)))]
            raise UserError(f"annotation file {self.ann_file}: image {bad} needs a positive width and height")
        try:
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4)
            cats = np.array([a["category_id"] for a in anns], dtype=np.int64).reshape(len(anns))
        except (TypeError, ValueError) as exc:
            raise UserError(f"annotation file {self.ann_file}: every bbox must be 4 numbers [x, y, w, h] "
                            "and every category_id an integer") from exc
        labels, keep = self._clean_boxes(xywh, cats, hw[pos])
        pos = pos[keep]
        ratio = np.minimum(self.img_size[0] / hw[:, 0], self.img_size[1] / hw[:, 1])
        labels[:, :4] *= ratio[pos, None]
        order = np.argsort(pos, kind="stable")
        per_image = np.split(labels[order], np.cumsum(np.bincount(pos, minlength=len(self.ids)))[:-1])
        resized = (hw * ratio[:, None]).astype(np.int64)
        return [(per_image[i], (int(hw[i, 0]), int(hw[i, 1])), (int(resized[i, 0]), int(resized[i, 1])),
                 self._file_name(img_id)) for i, img_id in enumerate(self.ids)]

    def _clean_boxes(self, xywh, cats, hw):
        """xywh -> clipped xyxy + class index; returns (labels of kept boxes, keep mask)."""
        ids = np.asarray(self.class_ids)
        cls = np.minimum(np.searchsorted(ids, cats), len(ids) - 1)
        unknown = ids[cls] != cats
        if unknown.any():
            raise UserError(f"annotation file {self.ann_file}: category_id {cats[unknown][0]} is not in its "
                            f"categories {self.class_ids}")
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        clipped = np.clip(xyxy, 0, np.tile(hw[:, ::-1], 2))
        degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
        outside = ~degenerate & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
        n_clipped = int((~degenerate & ~outside & (clipped != xyxy).any(axis=1)).sum())
        if degenerate.any() or outside.any():
            logger.warning(f"{self.ann_file.name}: dropped {int(degenerate.sum())} boxes with zero or negative "
                           f"size and {int(outside.sum())} boxes outside their image")
        if n_clipped:
            logger.info(f"{self.ann_file.name}: clipped {n_clipped} boxes that extend past their image")
        keep = ~degenerate & ~outside
        labels = np.concatenate([clipped[keep], cls[keep, None].astype(np.float64)], axis=1)
        return labels, keep

    def _read_resized(self, index):
        """Letterbox-resized BGR image (no padding), or None when the file cannot be decoded."""
        img = cv2.imread(str(self.img_dir / self.annotations[index][3]))
        if img is None:
            return None
        r = min(self.img_size[0] / img.shape[0], self.img_size[1] / img.shape[1])
        size = (int(img.shape[1] * r), int(img.shape[0] * r))
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR) if size != img.shape[1::-1] else img

    def _mark_unreadable(self, index):
        """Count an undecodable image; once most of the set is unreadable, stop with a UserError."""
        self.unreadable.add(index)
        path = self.img_dir / self.annotations[index][3]
        if 2 * len(self.unreadable) > len(self.ids):
            raise UserError(f"most images under {self.img_dir} cannot be decoded "
                            f"({len(self.unreadable)} of {len(self.ids)}, e.g. {path})")
        logger.warning(f"skipping unreadable image {path} ({len(self.unreadable)} so far)")

    def _cache_images(self):
        """Read every image once into RAM (resized); decoding runs in threads (cv2 drops the GIL)."""
        mb = sum(h * w * 3 for _, _, (h, w), _ in self.annotations) / 2**20
        logger.info(f"caching {len(self.ids)} images of {self.img_dir} in RAM (~{mb:.0f} MB)")
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            imgs = list(pool.map(self._read_resized, range(len(self.ids))))
        for i in np.flatnonzero([img is None for img in imgs]):
            self._mark_unreadable(int(i))
        return imgs

    def load_anno(self, index):
        """Labels [N,5] (xyxy + class index) of image ``index``, in letterboxed coordinates."""
        return self.annotations[index][0]

    def pull_item(self, index):
        """(resized BGR uint8 image, labels [N,5] xyxy+cls, (h, w) original, np.array([img_id])).

        An image that cannot be decoded is replaced by the next readable one (and counted).
        """
        for step in range(len(self.ids)):
            i = (index + step) % len(self.ids)
            if i in self.unreadable:
                continue
            img = self.imgs[i] if self.imgs is not None else self._read_resized(i)
            if img is not None:
                labels, img_info, _, _ = self.annotations[i]
                return img.copy() if self.imgs is not None else img, labels.copy(), img_info, np.array([self.ids[i]])
            self._mark_unreadable(i)
        raise UserError(f"no readable image under {self.img_dir}")

    def __getitem__(self, index):
        _, index = self.split_index(index)
        img, target, img_info, img_id = self.pull_item(index)
        if self.preproc is not None:
            img, target = self.preproc(img, target, self.input_dim)
        return img, target, img_info, img_id
