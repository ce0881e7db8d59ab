"""Mosaic (4 images on a 2x canvas) + random affine + MixUp around a dataset with ``pull_item``."""
import random

import cv2
import numpy as np

from yolox.data.data_augment import PAD_VALUE, random_affine
from yolox.data.datasets.datasets_wrapper import Dataset


def _resize(img, scale):
    h, w = img.shape[:2]
    size = (int(w * scale), int(h * scale))
    return img if size == (w, h) else cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)


class MosaicDetection(Dataset):
    """Training-time wrapper: with probability ``mosaic_prob`` a sample is a 4-image mosaic warped
    by a random affine (and, with ``mixup_prob``, blended 50/50 with another image), else the plain
    image; both then go through ``preproc`` (TrainTransform)."""

    def __init__(self, dataset, img_size, mosaic=True, preproc=None, degrees=10.0, translate=0.1,
                 mosaic_scale=(0.5, 1.5), mixup_scale=(0.5, 1.5), shear=2.0, enable_mixup=True,
                 mosaic_prob=1.0, mixup_prob=1.0):
        super().__init__(img_size, mosaic=mosaic)
        self._dataset = dataset
        self.preproc = preproc
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, mosaic_scale, shear
        self.mixup_scale = mixup_scale
        self.enable_mixup = enable_mixup
        self.mosaic_prob, self.mixup_prob = mosaic_prob, mixup_prob
        # MixUp pastes an image that has boxes; an all-negative data set simply skips MixUp.
        counts = (dataset.box_counts() if hasattr(dataset, "box_counts")
                  else [len(dataset.load_anno(i)) for i in range(len(dataset))])
        self._with_boxes = np.flatnonzero(counts)

    def __len__(self):
        return len(self._dataset)

    def close_mosaic(self):
        """Turn mosaic (and with it MixUp) off for the last ``no_aug_epochs``."""
        self.enable_mosaic = False

    def __getitem__(self, index):
        mosaic, idx = self.split_index(index)
        if not (mosaic and random.random() < self.mosaic_prob):
            img, labels, img_info, img_id = self._dataset.pull_item(idx)
            img, target = self.preproc(img, labels, self.input_dim)
            return img, target, img_info, img_id
        img, labels, img_id = self.mosaic(idx)
        h, w = self.input_dim
        img, labels = random_affine(img, labels, target_size=(w, h), degrees=self.degrees,
                                    translate=self.translate, scales=self.scale, shear=self.shear)
        if self.enable_mixup and len(labels) and len(self._with_boxes) and random.random() < self.mixup_prob:
            img, labels = self.mixup(img, labels, self.input_dim)
        img, target = self.preproc(img, labels, self.input_dim)
        return img, target, (h, w), img_id

    def mosaic(self, idx):
        """Image ``idx`` and 3 random others around a random centre of a (2h, 2w) canvas.

        Returns (canvas uint8, labels [N,5] xyxy+cls clipped to the canvas, img_id of ``idx``).
        Boxes cut down to under 1 px by the canvas edge are dropped here, so the affine warp
        cannot turn such slivers into phantom boxes.
        """
        h, w = self.input_dim
        yc, xc = int(random.uniform(0.5 * h, 1.5 * h)), int(random.uniform(0.5 * w, 1.5 * w))
        indices = [idx] + [random.randint(0, len(self._dataset) - 1) for _ in range(3)]
        canvas = np.full((2 * h, 2 * w, 3), PAD_VALUE, dtype=np.uint8)
        all_labels = []
        for quadrant, index in enumerate(indices):   # quadrants: top-left, top-right, bottom-left, bottom-right
            img, labels, _, img_id = self._dataset.pull_item(index)
            if quadrant == 0:
                first_id = img_id
            scale = min(h / img.shape[0], w / img.shape[1])
            img = _resize(img, scale)
            ih, iw = img.shape[:2]
            ox = xc - iw if quadrant in (0, 2) else xc
            oy = yc - ih if quadrant in (0, 1) else yc
            x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + iw, 2 * w), min(oy + ih, 2 * h)
            canvas[y1:y2, x1:x2] = img[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
            labels[:, :4] = labels[:, :4] * scale + (ox, oy, ox, oy)
            all_labels.append(labels)
        labels = np.concatenate(all_labels, axis=0)
        labels[:, 0:4:2] = labels[:, 0:4:2].clip(0, 2 * w)
        labels[:, 1:4:2] = labels[:, 1:4:2].clip(0, 2 * h)
        keep = np.minimum(labels[:, 2] - labels[:, 0], labels[:, 3] - labels[:, 1]) > 1
        return canvas, labels[keep], first_id

    def mixup(self, origin_img, origin_labels, input_dim):
        """Blend 50/50 with a randomly scaled (``mixup_scale``), maybe flipped, randomly cropped image."""
        jitter = random.uniform(*self.mixup_scale)
        flip = random.random() > 0.5
        cp_index = int(self._with_boxes[random.randint(0, len(self._with_boxes) - 1)])
        img, cp_labels, _, _ = self._dataset.pull_item(cp_index)

        ratio = min(input_dim[0] / img.shape[0], input_dim[1] / img.shape[1])
        letterboxed = np.full((input_dim[0], input_dim[1], 3), PAD_VALUE, dtype=np.uint8)
        resized = _resize(img, ratio)
        letterboxed[: resized.shape[0], : resized.shape[1]] = resized
        cp_img = _resize(letterboxed, jitter)
        ratio *= jitter
        ch, cw = cp_img.shape[:2]
        boxes = cp_labels[:, :4] * ratio
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, cw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, ch)
        if flip:
            cp_img = cp_img[:, ::-1]
            boxes[:, [0, 2]] = cw - boxes[:, [2, 0]]

        th, tw = origin_img.shape[:2]
        # the th x tw window at (y_off, x_off) of cp_img padded with PAD_VALUE to at least th x tw,
        # built directly: only the window is filled and copied, never the whole padded image
        y_off = random.randint(0, max(ch, th) - th)
        x_off = random.randint(0, max(cw, tw) - tw)
        crop = np.full((th, tw, 3), PAD_VALUE, dtype=np.uint8)
        window = cp_img[y_off:y_off + th, x_off:x_off + tw]
        crop[:window.shape[0], :window.shape[1]] = window
        boxes -= (x_off, y_off, x_off, y_off)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, tw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, th)

        labels = np.concatenate([origin_labels, np.concatenate([boxes, cp_labels[:, 4:5]], axis=1)], axis=0)
        return cv2.addWeighted(np.ascontiguousarray(origin_img), 0.5, crop, 0.5, 0.0), labels
