"""The MLPerf reference's SSD data layout, for the loader that reads it instead of ``__getitem__``.

``--dl-worker-type HABANA`` (on HPU, see ``accel.policy.loader_class``) hands the data sets to a
vendor loader whose SSD pipelines do not call ``__getitem__``. They recognise a COCO 2017 set by
its annotation json (``data["info"]["description"]``), then read the data set the way the MLPerf
reference's ``ssd/utils.py`` lays it out (``COCODetection`` with an ``SSDTransformer``): a manifest
from ``images`` / ``img_folder`` / ``label_info`` (or ``annotate_file``), and the augmentation from
the transform's attributes, which they run themselves. Anything else they do not recognise, and
the loader falls back to torch's with the same arguments.

``ReferenceLayout`` offers that layout, built from this project's ``CocoDetection`` with its real
file names, label map and augmentation parameters; ``ReferenceBatches`` turns the reference's batch
tuple back into this project's: the one place where the two layouts meet.

The module name ends in ``utils`` on purpose: those pipelines recognise the SSD crop and flip by
the text ``utils.SSDCropping`` / ``utils.RandomHorizontalFlip`` in ``str(type(transform))``, where
the reference defines them in ``utils.py``.
"""
import torch
import torchvision.transforms as T
from torch.utils.data import Dataset

from ssd.anchors import dboxes300_coco
from ssd.data import CROP_MIN_IOUS, FLIP_PROB, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, JITTER
from ssd.encoder import Encoder

# The reference pads evaluation targets to this many rows (``SSDTransformer(max_num=200)``).
MAX_VAL_BOXES = 200


class SSDCropping:
    """The spec's random crop (``ssd.data.sample_crop``) as the reference names it: up to
    ``num_cropping_iterations`` trials per drawn choice of minimum IoU. A description for the
    pipelines that crop by themselves; ``CocoDetection`` applies the crop itself."""

    def __init__(self, num_cropping_iterations=1):
        self.num_cropping_iterations = num_cropping_iterations
        self.min_ious = CROP_MIN_IOUS


class RandomHorizontalFlip:
    """The box-aware horizontal flip of the spec (boxes flip with the image), with probability ``p``."""

    def __init__(self, p=FLIP_PROB):
        self.p = p


class ReferenceTransform:
    """The augmentation of a ``CocoDetection`` spelled as the reference's ``SSDTransformer``
    attributes: ``val``; for training ``crop`` and ``hflip``, then ``img_trans`` (resize, colour
    jitter, to tensor), then ``normalize``; for evaluation ``trans_val`` (resize, to tensor,
    normalise). The values are ``ssd.data``'s own constants, so they cannot drift from what the
    torch path does. Mean and std are lists: the loader compares them with lists."""

    def __init__(self, train, crop_tries=1):
        self.size = (INPUT_SIZE, INPUT_SIZE)
        self.val = not train
        self.crop = SSDCropping(crop_tries)
        self.hflip = RandomHorizontalFlip()
        self.normalize = T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
        self.img_trans = T.Compose([T.Resize(self.size), T.ColorJitter(*JITTER), T.ToTensor()])
        self.trans_val = T.Compose([T.Resize(self.size), T.ToTensor(), self.normalize])


class ReferenceLayout(Dataset):
    """A ``CocoDetection`` in the reference's layout, built only for ``--dl-worker-type HABANA``.

    Attributes as the reference's ``COCODetection``: ``data`` (the annotation json as parsed),
    ``img_folder``, ``annotate_file``, ``label_map`` (category id -> label), ``label_info``
    (label -> name, 0 = background), ``images`` (image id -> (file name, (height, width),
    [([x, y, w, h] pixels, label), ...])) for exactly the images this data set serves, with the
    boxes as cleaned by ``detcore.data.index``, and ``transform`` (``ReferenceTransform``).

    Items are the reference's too, for the loader's fallback to torch's (default collate):
    ``(image, image id, (height, width), boxes, labels)``, the augmentation being the wrapped data
    set's. Training targets come encoded per anchor ([8732, 4] xywh, [8732]) as the reference's
    transform encodes them; evaluation boxes are ltrb padded to ``MAX_VAL_BOXES`` rows (label 0),
    extra rows dropped: evaluation reads only images, ids and sizes.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        source = dataset.source
        self.data = source.coco.dataset
        self.img_folder, self.annotate_file = str(source.img_dir), str(source.ann_file)
        self.label_map, self.label_info = dict(dataset.label_map), dataset.label_info
        self.transform = ReferenceTransform(dataset.train, dataset.crop_tries)
        self.images = {img_id: self._entry(source, img_id) for img_id in dataset.ids}
        self.encoder = Encoder(dboxes300_coco()) if dataset.train else None

    @staticmethod
    def _entry(source, img_id):
        boxes, cls = source.boxes[img_id]
        xywh = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes]
        return source.file_name(img_id), source.size(img_id), list(zip(xywh, (cls + 1).tolist()))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        img, boxes, labels, img_id, size = self.dataset[index]
        if self.encoder is not None:
            boxes, labels = self.encoder.encode(boxes, labels)
        else:
            n = min(len(labels), MAX_VAL_BOXES)
            padded_boxes = torch.zeros(MAX_VAL_BOXES, 4)
            padded_labels = torch.zeros(MAX_VAL_BOXES, dtype=torch.long)
            padded_boxes[:n], padded_labels[:n] = boxes[:n], labels[:n]
            boxes, labels = padded_boxes, padded_labels
        return img, img_id, size, boxes, labels


def _sizes(img_size):
    """(height, width) per image as [B, 2]. The reference's batches carry a pair of [B] tensors
    (torch's default collate of ``(h, w)``; the vendor's evaluation pipelines likewise); a tensor
    passes through as it comes (the vendor's training batches; training does not read sizes)."""
    if torch.is_tensor(img_size):
        return img_size
    return torch.stack([torch.as_tensor(s).reshape(-1) for s in img_size], dim=1)


class ReferenceBatches:
    """Iterates a loader of the reference's ``(img, img_id, img_size, bbox, label)`` batches as
    this project's ``(imgs, boxes, labels, ids, sizes)``.

    Training batches carry per-anchor targets ([B, 8732, 4] xywh, [B, 8732]): the vendor's SSD
    pipelines encode them (as the reference's transform does), so the training step must not
    encode again (``TrainStep(..., encoded=True)``). Evaluation batches carry padded ltrb boxes,
    which evaluation ignores.
    """

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for img, img_id, img_size, bbox, label in self.loader:
            yield img, bbox.float(), label.long(), torch.as_tensor(img_id).reshape(-1), _sizes(img_size)
