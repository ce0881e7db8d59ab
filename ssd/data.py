"""Detection data for SSD300: a COCO root or a Pascal VOC devkit (``open_sources``), the spec's
augmentation, padded batches.

Training targets stay as padded ltrb boxes (normalised to [0, 1]) plus labels (0 = padding) so
the training loop can encode a whole batch at once with ``Encoder.encode_batch`` (the default,
``--encode-in main``); ``EncodedTargets`` encodes image by image in the loader workers instead, the
MLPerf reference's way (``--encode-in workers``).
Every random draw comes from a per-sample generator seeded by (seed, epoch, index): the
augmentation of a sample does not depend on worker count, rank count or resume point.
"""
import random
import re
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from accel.errors import UserError
from detcore.coco import CocoSource, PerImage, UnreadableImages, find_sorted

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
            window = np.array([left, top, left + w, top + h], dtype=np.float64)
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
    ``ann_file``), or any ``detcore.coco.IndexedSource`` (a VOC split
    from ``detcore.voc.VocSource``), read and cleaned by the policy both models share. Labels:
    the source's class order -> 1..K (0 is background); for COCO the sorted category ids.

    ``train=True`` uses only images with boxes (as the MLPerf reference) and applies the random
    augmentation; otherwise every image is kept and only resized + normalised. An image that
    fails to decode is replaced by the next readable one, with a warning naming it.

    Targets are computed per item from the source's flat ``BoxTable``, never stored per image:
    forked loader workers then share the label memory instead of copying it page by page.
    """

    def __init__(self, img_dir=None, ann_file=None, train=False, seed=0, crop_tries=1, source=None):
        if source is None:
            source = CocoSource(ann_file, img_dir)
        self.source, self.train, self.seed, self.epoch = source, train, seed, 0
        self.crop_tries = crop_tries
        self.cat_ids = self.source.class_ids
        self.label_map = {cat: i + 1 for i, cat in enumerate(self.cat_ids)}
        self._table = source.table
        # the samples: images with boxes only when training
        self.ids = self._table.ids[self._table.counts > 0 if train else slice(None)].tolist()
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
        with Image.open(self.img_dir / self._table.file_name_at(self._rows[index])) as img:
            return img.convert("RGB")

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


def coco_paths(root):
    """(train images, train json, val images, val json) under a COCO root; UserError if absent."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data: {root} is not a directory (expected a COCO root with train2017/, "
                        "val2017/ and annotations/)")
    ann = root / "annotations"
    return (root / "train2017", ann / "instances_train2017.json",
            root / "val2017", ann / "instances_val2017.json")


# Pascal VOC as the detection papers train and test it: 2007+2012 trainval, VOC2007 test.
VOC_TRAIN = (("2007", "trainval"), ("2012", "trainval"))
VOC_TEST = ("2007", "test")
_VOC_YEAR = re.compile(r"VOC\d{4}")


def _image_set(devkit, year, name):
    return devkit / f"VOC{year}" / "ImageSets" / "Main" / f"{name}.txt"


def voc_layout(root):
    """(devkit folder, years to use) when ``root`` is a VOC devkit (a folder holding VOC2007/,
    VOC2012/ ...; also a folder holding VOCdevkit/ as ``tools/make_shapes.py --format voc``
    writes it) or one VOC<year>/ folder (then that year only); None for anything else."""
    root = Path(root)
    if _VOC_YEAR.fullmatch(root.name) and (root / "Annotations").is_dir():
        return root.parent, (root.name[3:],)
    for devkit in (root, root / "VOCdevkit"):
        years = tuple(sorted(p.name[3:] for p in devkit.glob("VOC[0-9][0-9][0-9][0-9]")
                             if (p / "Annotations").is_dir()))
        if years:
            return devkit, years
    return None


def voc_sources(devkit, years, train=True, class_names=None):
    """(train source or None, val source) of a VOC devkit: train on the trainval lists of
    2007 and 2012 (those of ``years`` that have one), evaluate on VOC2007 test (else the test
    list of the one year given). The label count comes from the train split's class names
    (sorted) unless ``class_names`` fixes them; the val split must use the same names (an xml
    naming another class is one line naming it)."""
    from detcore.voc import VocSource

    sets = [(y, n) for y, n in VOC_TRAIN if y in years and _image_set(devkit, y, n).is_file()]
    if not sets:
        sets = [(y, "trainval") for y in years if _image_set(devkit, y, "trainval").is_file()]
    test = VOC_TEST if VOC_TEST[0] in years else (years[0], "test")
    if not _image_set(devkit, *test).is_file():
        raise UserError(f"--data: VOC data {devkit} has no {_image_set(devkit, *test)} to evaluate on "
                        "(SSD evaluates on VOC2007 test)")
    if not sets and (train or class_names is None):
        raise UserError(f"--data: VOC data {devkit} has no ImageSets/Main/trainval.txt in "
                        f"{', '.join(f'VOC{y}' for y in years)} to train on")
    train_src = None
    if train or class_names is None:
        train_src = VocSource(devkit, sets, class_names=class_names)
        class_names = train_src.class_names
    try:
        val_src = VocSource(devkit, [test], class_names=class_names)
    except UserError as exc:
        if train_src is None:
            raise
        where = " + ".join(f"VOC{y} {n}" for y, n in sets)
        raise UserError(f"--data: {exc} (the classes of the training split, {where}; the val split "
                        "must use the same names)") from None
    return (train_src if train else None), val_src


def open_sources(root, train=True, class_names=None):
    """(train source or None, val source) of the ``--data`` folder, labelled alike.

    A VOC devkit (see ``voc_layout``; ``voc_sources`` picks the splits), else a COCO root
    (train2017/, val2017/, annotations/) whose splits must list the same categories.
    ``train=False`` (``--eval-only``) reads what the val split's labels need only.
    ``class_names`` (a checkpoint's, for --eval-only) fixes the label order where the layout
    infers it from the data (VOC); COCO's comes from its category ids.
    """
    voc = voc_layout(root) if Path(root).is_dir() else None
    if voc is not None:
        return voc_sources(*voc, train=train, class_names=class_names)
    train_dir, train_ann, val_dir, val_ann = coco_paths(root)
    train_src = CocoSource(train_ann, train_dir) if train else None
    val_src = CocoSource(val_ann, val_dir)
    if train_src is not None and val_src.class_ids != train_src.class_ids:
        raise UserError(f"--data: {val_ann} and {train_ann} list different categories")
    return train_src, val_src
