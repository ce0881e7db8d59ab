"""Detection data for SSD300: a COCO root, a Pascal VOC devkit or a YOLO data.yaml
(``open_sources``), the spec's
augmentation, padded batches.

Training targets stay as padded ltrb boxes (normalised to [0, 1]) plus labels (0 = padding) so
the training loop can encode a whole batch at once with ``Encoder.encode_batch`` (the default,
``--encode-in main``); ``EncodedTargets`` encodes image by image in the loader workers instead, the
MLPerf reference's way (``--encode-in workers``).
Every random draw comes from a per-sample generator seeded by (seed, epoch, index): the
augmentation of a sample does not depend on worker count, rank count or resume point.
"""
import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from accel.errors import UserError
from detcore.boxes import xywh2xyxy
from detcore.data import layout as sources
from detcore.data.coco import CocoSource
from detcore.data.index import PerImage, UnreadableImages, find_sorted
# the layouts' paths as they were defined here (callers and tests import them from ssd.data)
from detcore.data.layout import VOC_TEST, VOC_TRAIN, coco_paths, voc_layout  # noqa: F401

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 300

# The spec's crop choices: no crop, crop with no IoU constraint, crop whose IoU with every
# box is above 0.1 / 0.3 / 0.5 / 0.7 / 0.9.
NO_CROP = "none"
CROP_MIN_IOUS = (NO_CROP, float("-inf"), 0.1, 0.3, 0.5, 0.7, 0.9)
FLIP_PROB = 0.5
# ColorJitter(brightness, contrast, saturation, hue) of the spec
JITTER = (0.125, 0.5, 0.5, 0.05)


def pair_iou(boxes, window):
    """IoU of each ltrb box [N, 4] with one ltrb window (4,)."""
    lt = np.maximum(boxes[:, :2], window[:2])
    rb = np.minimum(boxes[:, 2:], window[2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    win_area = (window[2:] - window[:2]).prod()
    return inter / (area + win_area - inter)


def crop_boxes(boxes, labels, window):
    """Keep boxes whose centre lies strictly inside ``window``; clip and re-normalise them to it."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((centre > window[:2]) & (centre < window[2:])).all(axis=1)
    size = window[2:] - window[:2]
    kept = np.clip(boxes[keep], np.tile(window[:2], 2), np.tile(window[2:], 2))
    kept = (kept - np.tile(window[:2], 2)) / np.tile(size, 2)
    return kept.astype(np.float32), labels[keep]


def sample_crop(rng, boxes, tries=1):
    """Draw the spec's random crop window (normalised ltrb) or None for "keep the image".

    ``tries`` trials per drawn choice (MLPerf ``--num-cropping-iterations``, default 1, the
    other legal value 50): width and height in [0.3, 1], aspect w/h in [0.5, 2], IoU with every
    box above the choice's minimum, at least one box centre inside; when all trials fail a new
    choice is drawn.
    """
    if len(boxes) == 0:
        return None
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    while True:
        min_iou = rng.choice(CROP_MIN_IOUS)
        if min_iou == NO_CROP:
            return None
        for _ in range(tries):
            w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
            if not 0.5 <= w / h <= 2.0:
                continue
            left, top = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
            window = xywh2xyxy(np.array([left, top, w, h], dtype=np.float64))
            if not (pair_iou(boxes, window) > min_iou).all():
                continue
            if ((centre > window[:2]) & (centre < window[2:])).all(axis=1).any():
                return window


def color_jitter(rng, img, brightness=JITTER[0], contrast=JITTER[1], saturation=JITTER[2],
                 hue=JITTER[3]):
    """torchvision ColorJitter(0.125, 0.5, 0.5, 0.05) semantics with factors drawn from ``rng``."""
    ops = [
        (TF.adjust_brightness, rng.uniform(1 - brightness, 1 + brightness)),
        (TF.adjust_contrast, rng.uniform(1 - contrast, 1 + contrast)),
        (TF.adjust_saturation, rng.uniform(1 - saturation, 1 + saturation)),
        (TF.adjust_hue, rng.uniform(-hue, hue)),
    ]
    rng.shuffle(ops)
    for op, factor in ops:
        img = op(img, factor)
    return img


def to_normalised_tensor(img):
    """PIL image -> resized 300x300 float tensor with ImageNet normalisation."""
    img = img.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


def train_transform(rng, img, boxes, labels, crop_tries=1):
    """Random crop -> horizontal flip (p=FLIP_PROB) -> resize 300 -> colour jitter -> normalise."""
    window = sample_crop(rng, boxes, crop_tries)
    if window is not None:
        w, h = img.size
        img = img.crop(tuple(float(v) for v in window * np.array([w, h, w, h])))
        boxes, labels = crop_boxes(boxes, labels, window)
    if rng.random() < FLIP_PROB:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    img = color_jitter(rng, img.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD), boxes, labels


class CocoDetection(Dataset):
    """One split of detection data for SSD: a COCO json + image folder (``img_dir``,
    ``ann_file``), or any ``detcore.data.index.IndexedSource`` (a VOC split
    from ``detcore.data.voc.VocSource``), read and cleaned by the policy both models share. Labels:
    the source's class order -> 1..K (0 is background); for COCO the sorted category ids.

    ``train=True`` applies the random augmentation; otherwise every image is kept and only
    resized + normalised. Training keeps background images (no boxes: negatives for the
    classifier) except on a COCO json, where it drops them as the MLPerf reference's
    ``COCODetection`` does ("images without annotations are removed", ~1% of COCO train): the
    recipe run as the reference trains on the reference's images. ``keep_background`` (True /
    False) overrides that choice. An image that fails to decode is replaced by the next readable
    one, with a warning naming it.

    Targets are computed per item from the source's flat ``BoxTable``, never stored per image:
    forked loader workers then share the label memory instead of copying it page by page.
    """

    def __init__(self, img_dir=None, ann_file=None, train=False, seed=0, crop_tries=1, source=None,
                 keep_background=None):
        if source is None:
            source = CocoSource(ann_file, img_dir)
        if keep_background is None:
            keep_background = not isinstance(source, CocoSource)     # the reference's COCO filter
        self.source, self.train, self.seed, self.epoch = source, train, seed, 0
        self.crop_tries = crop_tries
        self.cat_ids = self.source.class_ids
        self.label_map = {cat: i + 1 for i, cat in enumerate(self.cat_ids)}
        self._table = source.table
        # the samples: every image, or images with boxes only when training without background
        drop = train and not keep_background
        self.ids = self._table.ids[self._table.counts > 0 if drop else slice(None)].tolist()
        if not self.ids:
            raise UserError(f"--data: {source.ann_file} has no images with usable boxes")
        self.img_dir = source.img_dir
        self.unreadable = UnreadableImages(self.img_dir, len(self.ids))

    @property
    def ids(self):
        """Image id of each sample (a list). Assigning a subset of the source's ids makes the
        samples that subset (tests pick a few images so)."""
        return self._ids

    @ids.setter
    def ids(self, ids):
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = find_sorted(self._table.ids, wanted)
        missing = rows < 0
        if missing.any():
            raise UserError(f"image id {int(wanted[missing][0])} is not in {self.source.ann_file}")
        self._ids, self._rows = wanted.tolist(), rows       # the table row of each sample

    @property
    def coco(self):
        """The source's pycocotools index (what COCO scoring reads), built on first use."""
        return self.source.coco

    @property
    def targets(self):
        """Image id (any of the source's) -> (ltrb boxes [N, 4] float32 in [0, 1], labels [N] int64)."""
        return PerImage(self._table, self._normalised)

    @property
    def num_classes(self):
        """Number of labels including background (label_num of SSD300)."""
        return len(self.cat_ids) + 1

    @property
    def label_info(self):
        """Label -> category name, 0 = background (the reference's ``label_info``, also the
        ``label_map`` of its ``iter_N.pt`` checkpoints)."""
        return {0: "background", **{i + 1: name for i, name in enumerate(self.source.class_names)}}

    def _normalised(self, row):
        """ltrb boxes [N, 4] float32 in [0, 1] and labels [N] int64 in 1..K of table row ``row``."""
        boxes, cls, _ = self._table.at(row)
        h, w = self._table.size_at(row)
        return (boxes / [w, h, w, h]).astype(np.float32), cls + 1

    def target(self, index):
        """(ltrb boxes, labels) of sample ``index``, what ``__getitem__`` augments and returns."""
        return self._normalised(self._rows[index])

    def __len__(self):
        return len(self.ids)

    def _read(self, index):
        """The RGB image of sample ``index``. PIL refuses a truncated JPEG ("image file is
        truncated") and an unknown format with an OSError that names no file: it is raised again
        naming the path, so the skip warning names the file instead of a sample number."""
        path = self.img_dir / self._table.file_name_at(self._rows[index])
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except OSError as exc:
            if getattr(exc, "filename", None):
                raise
            raise OSError(0, str(exc), str(path)) from exc

    def __getitem__(self, index):
        index, img = self.unreadable.first_readable(index, self._read)
        row = self._rows[index]
        boxes, labels = self._normalised(row)
        if self.train:
            rng = random.Random(hash((self.seed, self.epoch, index)))
            tensor, boxes, labels = train_transform(rng, img, boxes, labels, self.crop_tries)
        else:
            tensor = to_normalised_tensor(img)
        return tensor, torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)), \
            torch.from_numpy(labels), int(self._table.ids[row]), self._table.size_at(row)


def collate(batch):
    """Stack images; pad boxes [B, G, 4] and labels [B, G] (0 = padding) to the batch maximum."""
    imgs, boxes, labels, ids, sizes = zip(*batch)
    g = max(1, max(len(b) for b in boxes))
    pad_boxes = torch.zeros(len(batch), g, 4)
    pad_labels = torch.zeros(len(batch), g, dtype=torch.long)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        pad_boxes[i, :len(b)] = b
        pad_labels[i, :len(lab)] = lab
    return torch.stack(imgs), pad_boxes, pad_labels, torch.tensor(ids), torch.tensor(sizes)


class EncodedTargets(Dataset):
    """``--encode-in workers``: a training ``CocoDetection`` whose samples carry per-anchor targets
    ([8732, 4] xywh boxes, [8732] labels), encoded one image at a time wherever ``__getitem__``
    runs (the loader workers), as the reference's transform does. Batch with ``collate_encoded``;
    the training step then skips encoding (``TrainStep(..., encoded=True)``)."""

    def __init__(self, dataset, encoder):
        self.dataset, self.encoder = dataset, encoder

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        img, boxes, labels, img_id, size = self.dataset[index]
        gloc, glabel = self.encoder.encode(boxes, labels)
        return img, gloc, glabel, img_id, size


def collate_encoded(batch):
    """Batch ``EncodedTargets`` samples: per-anchor targets have one shape for every image, so they
    stack (no padding)."""
    imgs, gloc, glabel, ids, sizes = zip(*batch)
    return torch.stack(imgs), torch.stack(gloc), torch.stack(glabel), torch.tensor(ids), torch.tensor(sizes)


class EpochSampler(torch.utils.data.DistributedSampler):
    """This rank's share of a seeded per-epoch permutation, whole batches only.

    ``set_epoch(epoch, skip_batches)`` lets a resumed run start mid-epoch at the exact batch it
    stopped at, without loading the skipped images. It is a ``DistributedSampler`` (whose
    iteration it replaces entirely) for the loader of ``--dl-worker-type HABANA``: its SSD
    pipelines draw their own order and only look at the sampler's type, and the single-card one
    shuffles only when handed a ``DistributedSampler`` with ``shuffle`` set.
    """

    def __init__(self, size, batch_size, rank, world_size, seed, shuffle=True):
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=True)
        self.size, self.batch_size, self.rank, self.world = size, batch_size, rank, world_size
        self.seed, self.shuffle, self.epoch, self.skip = seed, shuffle, 0, 0
        self.batches_per_epoch = size // world_size // batch_size

    def set_epoch(self, epoch, skip_batches=0):
        self.epoch, self.skip = epoch, skip_batches

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.size, generator=gen)
        else:
            order = torch.arange(self.size)
        mine = order[self.rank::self.world][:self.batches_per_epoch * self.batch_size]
        return iter(mine[self.skip * self.batch_size:].tolist())

    def __len__(self):
        return (self.batches_per_epoch - self.skip) * self.batch_size


def open_sources(root, train=True, class_names=None):
    """(train source or None, val source) of the ``--data`` path, labelled alike: a COCO root, a
    Pascal VOC devkit or a YOLO data.yaml, recognised by ``detcore.data.layout`` (the one place that
    looks at the layout; see it for the splits each layout gives). ``train=False``
    (``--eval-only``) reads what the val split's labels need only; ``class_names`` (a
    checkpoint's) fixes the label order where the layout infers it (VOC) and is checked against
    a data yaml's names; COCO's comes from its category ids."""
    return sources.open_sources(root, train=train, class_names=class_names, flag="--data")
