"""Mosaic (4 images on a 2x canvas) + random affine + MixUp around a dataset with ``pull_item``.

The augmentation is upstream 0.3.0's: the same random draws in the same order, the same box
arithmetic. What is built differs, for speed (issue 33), and only in pixels a bilinear tap apart:
- the affine warp reads only part of the (2h, 2w) canvas (at scale 2 about a quarter of it), so
  the canvas is built only over that part (plus 2 px for the bilinear taps) and a tile outside it
  is never decoded (its labels still are: the warp cuts them away exactly as before);
- a tile is painted by ONE warpAffine from the decoded file into its place on the canvas (the
  letterbox resize composed with the placement) instead of a resize to the letterbox size, another
  resize to the mosaic scale and a copy; with a cache the image is already at that size and is
  copied from the cache straight onto the canvas;
- MixUp's image goes through one warp (letterbox resize, jitter scale, flip and crop composed)
  into the crop instead of two resizes of a padded copy.
A dataset that has ``read_source``, ``letterbox_shape``, ``labels_of_readable`` and ``image_id``
(``SourceDataset``) gets all of it; any other dataset with ``pull_item`` works as before, through
the same painting code.
"""
import random

import cv2
import numpy as np

from yolox.data.data_augment import PAD_VALUE, affine_boxes, get_affine_matrix
from yolox.data.datasets.datasets_wrapper import Dataset

_FAST_API = ("read_source", "letterbox_shape", "labels_of_readable", "image_id")


def visible_region(mat, out_size, canvas_size, margin=2):
    """(x0, y0, x1, y1): the part of a ``canvas_size`` (w, h) canvas that ``cv2.warpAffine(canvas,
    mat, out_size)`` samples (the output rectangle mapped back, ``margin`` px added for the bilinear
    taps and fixed-point rounding), or None when it samples nothing of the canvas."""
    inv = cv2.invertAffineTransform(np.asarray(mat, dtype=np.float64))
    w, h = out_size
    corners = np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]) @ inv[:, :2].T + inv[:, 2]
    lo, hi = np.floor(corners.min(axis=0)), np.ceil(corners.max(axis=0))
    x0, y0 = max(int(lo[0]) - margin, 0), max(int(lo[1]) - margin, 0)
    x1, y1 = min(int(hi[0]) + margin + 1, canvas_size[0]), min(int(hi[1]) + margin + 1, canvas_size[1])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def paint(canvas, window, src, size, origin):
    """Paint ``src`` resized to ``size`` (w, h) with its top-left at ``origin`` (x, y) of the
    mosaic, where it meets ``window`` (x0, y0, x1, y1 of the mosaic): ``canvas`` is the array that
    holds that window.

    One ``cv2.warpAffine`` into the destination view when a resize is needed (cv2.resize's pixel
    centres: x' = (x + 0.5) * w / src_w - 0.5, edges replicated as it does), a plain copy when not.
    """
    cx, cy = window[:2]
    (tw, th), (ox, oy) = size, origin
    x0, y0 = max(ox, window[0]), max(oy, window[1])
    x1, y1 = min(ox + tw, window[2]), min(oy + th, window[3])
    if x0 >= x1 or y0 >= y1:
        return
    view = canvas[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
    sh, sw = src.shape[:2]
    if (sh, sw) == (th, tw):
        view[:] = src[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        return
    sx, sy = tw / sw, th / sh
    mat = np.array([[sx, 0.0, ox - x0 + 0.5 * sx - 0.5], [0.0, sy, oy - y0 + 0.5 * sy - 0.5]])
    cv2.warpAffine(src, mat, (x1 - x0, y1 - y0), dst=view, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)


def _clip(rect, window):
    """``rect`` (x0, y0, x1, y1) cut to ``window``; empty rectangles come out with x0 >= x1 or y0 >= y1."""
    return max(rect[0], window[0]), max(rect[1], window[1]), min(rect[2], window[2]), min(rect[3], window[3])


def _fill_outside(canvas, window, outer, inner):
    """PAD_VALUE over ``outer`` minus ``inner`` (mosaic coordinates; ``canvas`` holds ``window``):
    the bands above and below ``inner`` and the parts left and right of it."""
    x0, y0, x1, y1 = outer
    if x0 >= x1 or y0 >= y1:
        return
    ix0, iy0, ix1, iy1 = inner
    if ix0 >= ix1 or iy0 >= iy1:                         # nothing painted here: all of it
        ix0, iy0, ix1, iy1 = x0, y0, x0, y0
    cx, cy = window[:2]
    iy0, iy1 = min(max(iy0, y0), y1), min(max(iy1, y0), y1)
    ix0, ix1 = min(max(ix0, x0), x1), min(max(ix1, x0), x1)
    for a, b, c, d in ((x0, y0, x1, iy0), (x0, iy1, x1, y1), (x0, iy0, ix0, iy1), (ix1, iy0, x1, iy1)):
        if a < c and b < d:
            canvas[b - cy:d - cy, a - cx:c - cx] = PAD_VALUE


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
        self._fast = all(hasattr(dataset, name) for name in _FAST_API)
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
        h, w = self.input_dim
        centre, indices = self._draw_mosaic(idx)
        mat = get_affine_matrix((w, h), self.degrees, self.translate, self.scale, self.shear)
        region = visible_region(mat, (w, h), (2 * w, 2 * h))
        canvas, labels, img_id = self._build(indices, centre, region)
        if region is None:                    # the warp sees none of the canvas: all border
            img = np.full((h, w, 3), PAD_VALUE, dtype=np.uint8)
        else:
            shifted = mat.copy()
            shifted[:, 2] += mat[:, :2] @ np.array(region[:2], dtype=np.float64)
            img = cv2.warpAffine(canvas, shifted, (w, h), borderValue=(PAD_VALUE,) * 3)
        if len(labels):
            labels[:, :4] = affine_boxes(labels[:, :4], mat, (w, h))
        if self.enable_mixup and len(labels) and len(self._with_boxes) and random.random() < self.mixup_prob:
            img, labels = self.mixup(img, labels, self.input_dim)
        img, target = self.preproc(img, labels, self.input_dim)
        return img, target, (h, w), img_id

    def _draw_mosaic(self, idx):
        """The mosaic's random draws, in upstream's order: centre (y, then x), then 3 more images."""
        h, w = self.input_dim
        yc, xc = int(random.uniform(0.5 * h, 1.5 * h)), int(random.uniform(0.5 * w, 1.5 * w))
        return (xc, yc), [idx] + [random.randint(0, len(self._dataset) - 1) for _ in range(3)]

    def mosaic(self, idx):
        """Image ``idx`` and 3 random others around a random centre of a (2h, 2w) canvas.

        Returns (canvas uint8, labels [N,5] xyxy+cls clipped to the canvas, img_id of ``idx``).
        Boxes cut down to under 1 px by the canvas edge are dropped here, so the affine warp
        cannot turn such slivers into phantom boxes.
        """
        h, w = self.input_dim
        centre, indices = self._draw_mosaic(idx)
        return self._build(indices, centre, (0, 0, 2 * w, 2 * h))

    def _tile(self, index, visible):
        """(image or None, labels, img_id, letterbox (h, w)) of the tile drawn as ``index``: the
        image only when ``visible((h, w))`` says the tile shows (or the dataset can tell nothing
        without decoding)."""
        if not self._fast:
            img, labels, _, img_id = self._dataset.pull_item(index)
            return img, labels, img_id, img.shape[:2]
        labels, i = self._dataset.labels_of_readable(index)
        shape = tuple(int(v) for v in self._dataset.letterbox_shape(i))
        if not visible(shape):
            return None, labels, self._dataset.image_id(i), shape
        img, labels, j = self._dataset.read_source(i)
        if j != i:                            # found unreadable just now: the next image stands in
            shape = tuple(int(v) for v in self._dataset.letterbox_shape(j))
        return img, labels, self._dataset.image_id(j), shape

    def _build(self, indices, centre, region):
        """The canvas over ``region`` (x0, y0, x1, y1 of the (2h, 2w) mosaic; None: nothing) and the
        labels of all four tiles on the whole mosaic (see ``mosaic``). Only what no tile covers is
        filled with PAD_VALUE (the canvas can be 1280 x 1280 x 3: a full fill costs as much as a tile)."""
        h, w = self.input_dim
        xc, yc = centre
        window = region or (0, 0, 0, 0)
        canvas = np.empty((window[3] - window[1], window[2] - window[0], 3), dtype=np.uint8)
        all_labels, first_id, painted = [], None, []
        for quadrant, index in enumerate(indices):   # quadrants: top-left, top-right, bottom-left, bottom-right
            place = {}

            def visible(shape, quadrant=quadrant, place=place):
                lh, lw = shape
                scale = min(h / lh, w / lw)
                ih, iw = int(lh * scale), int(lw * scale)
                ox = xc - iw if quadrant in (0, 2) else xc
                oy = yc - ih if quadrant in (0, 1) else yc
                place.update(scale=scale, size=(iw, ih), origin=(ox, oy))
                x0, y0 = max(ox, window[0]), max(oy, window[1])     # the window lies within the mosaic
                x1, y1 = min(ox + iw, window[2]), min(oy + ih, window[3])
                return x0 < x1 and y0 < y1

            img, labels, img_id, shape = self._tile(index, visible)
            visible(shape)                    # the placement of the image actually used
            if first_id is None:
                first_id = img_id
            painted.append((img, place["size"], place["origin"]))
            ox, oy = place["origin"]
            labels[:, :4] = labels[:, :4] * place["scale"] + (ox, oy, ox, oy)
            all_labels.append(labels)
        quadrants = [(0, 0, xc, yc), (xc, 0, 2 * w, yc), (0, yc, xc, 2 * h), (xc, yc, 2 * w, 2 * h)]
        for quad, (img, (iw, ih), (ox, oy)) in zip(quadrants, painted):
            tile = (ox, oy, ox + iw, oy + ih) if img is not None else (0, 0, 0, 0)
            _fill_outside(canvas, window, _clip(quad, window), _clip(tile, window))
            if img is not None:
                paint(canvas, window, img, (iw, ih), (ox, oy))
        labels = np.concatenate(all_labels, axis=0)
        labels[:, 0:4:2] = labels[:, 0:4:2].clip(0, 2 * w)
        labels[:, 1:4:2] = labels[:, 1:4:2].clip(0, 2 * h)
        keep = np.minimum(labels[:, 2] - labels[:, 0], labels[:, 3] - labels[:, 1]) > 1
        return canvas, labels[keep], first_id

    def _source(self, index):
        """(image, labels, letterbox (h, w)) of image ``index`` for MixUp, decoded or cached."""
        if not self._fast:
            img, labels, _, _ = self._dataset.pull_item(index)
            return img, labels, img.shape[:2]
        img, labels, i = self._dataset.read_source(index)
        return img, labels, tuple(int(v) for v in self._dataset.letterbox_shape(i))

    def mixup(self, origin_img, origin_labels, input_dim):
        """Blend 50/50 with a randomly scaled (``mixup_scale``), maybe flipped, randomly cropped image.

        Upstream letterboxes the image into ``input_dim``, resizes that by the jitter, flips it and
        crops a window; here the image goes into the window in one warp composed of those steps
        (the window is PAD_VALUE where the jittered letterbox has no image)."""
        jitter = random.uniform(*self.mixup_scale)
        flip = random.random() > 0.5
        cp_index = int(self._with_boxes[random.randint(0, len(self._with_boxes) - 1)])
        img, cp_labels, (lh, lw) = self._source(cp_index)

        big_h, big_w = input_dim
        ratio = min(big_h / lh, big_w / lw)
        nh, nw = int(lh * ratio), int(lw * ratio)        # the image inside the letterbox
        ch, cw = int(big_h * jitter), int(big_w * jitter)   # the jittered letterbox
        ratio *= jitter
        boxes = cp_labels[:, :4] * ratio
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, cw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, ch)
        if flip:
            boxes[:, [0, 2]] = cw - boxes[:, [2, 0]]

        th, tw = origin_img.shape[:2]
        y_off = random.randint(0, max(ch, th) - th)
        x_off = random.randint(0, max(cw, tw) - tw)
        crop = np.empty((th, tw, 3), dtype=np.uint8)
        ex, ey = nw * cw / big_w, nh * ch / big_h        # the image's extent in the jittered letterbox
        sh, sw = img.shape[:2]
        kx, ky = ex / sw, ey / sh
        right = min(int(round(ex)), cw)
        dx0, dx1 = (cw - right - x_off, cw - x_off) if flip else (-x_off, right - x_off)
        dx0, dx1 = max(dx0, 0), min(dx1, tw)
        dy0, dy1 = 0, min(min(int(round(ey)), ch) - y_off, th)
        _fill_outside(crop, (0, 0, tw, th), (0, 0, tw, th), (dx0, dy0, dx1, dy1))
        if dx0 < dx1 and dy0 < dy1:
            if flip:   # column c of the jittered letterbox lands on cw - 1 - c - x_off
                row0 = [-kx, 0.0, cw - 0.5 - 0.5 * kx - x_off - dx0]
            else:
                row0 = [kx, 0.0, 0.5 * kx - 0.5 - x_off - dx0]
            mat = np.array([row0, [0.0, ky, 0.5 * ky - 0.5 - y_off - dy0]])
            cv2.warpAffine(img, mat, (dx1 - dx0, dy1 - dy0), dst=crop[dy0:dy1, dx0:dx1],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        boxes -= (x_off, y_off, x_off, y_off)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, tw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, th)

        labels = np.concatenate([origin_labels, np.concatenate([boxes, cp_labels[:, 4:5]], axis=1)], axis=0)
        return cv2.addWeighted(np.ascontiguousarray(origin_img), 0.5, crop, 0.5, 0.0, dst=crop), labels
