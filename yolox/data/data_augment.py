"""Image + box augmentations of the YOLOX recipe (upstream 0.3.0 semantics), vectorised over boxes.

Boxes are float arrays ``[N, 4+]`` in pixel xyxy with the class in column 4 (dataset side), or
``(cls, cx, cy, w, h)`` rows padded to ``max_labels`` (what the model's loss consumes).
Randomness comes from Python's ``random`` / ``np.random`` global state, which
``worker_init_reset_seed`` re-seeds per DataLoader worker.
"""
import math
import random

import cv2
import numpy as np

from detcore.boxes import xyxy2cxcywh
from detcore.deploy.letterbox import PAD_VALUE, letterbox  # noqa: F401  (re-exported: mosaic, tests)


def hue_lut(dh):
    """(256,) uint8 table adding the integer ``dh`` to an OpenCV uint8 hue, modulo 180 (its range
    is 0..179); entries past 179 are never looked up."""
    return ((np.arange(256, dtype=np.int16) + int(dh)) % 180).astype(np.uint8)


def shift_hsv(hsv, gains):
    """In place on an OpenCV HSV uint8 image: hue + gains[0] modulo 180, saturation + gains[1] and
    value + gains[2] clipped to 0..255 (upstream's int16 arithmetic, the same pixels).

    Why not one 3-channel ``cv2.LUT``: OpenCV has no vectorised multi-channel table lookup, and on a
    640x640 image it cost 0.6-1.0 ms, the largest part of the HSV stage. Here the hue (only when
    shifted) goes through a 1-channel table on its extracted plane, and saturation and value through
    a saturating ``cv2.add`` / ``cv2.subtract`` of a constant image (uint8 saturation is exactly the
    clip): 0.1-0.3 ms together."""
    dh, ds, dv = (int(g) for g in gains)
    if dh:
        hue = cv2.extractChannel(hsv, 0)
        cv2.LUT(hue, hue_lut(dh), dst=hue)
        cv2.insertChannel(hue, hsv, 0)
    for op, sign in ((cv2.add, 1), (cv2.subtract, -1)):
        amounts = (0, min(max(sign * ds, 0), 255), min(max(sign * dv, 0), 255))   # 255 saturates all
        if any(amounts):
            const = np.empty_like(hsv)
            const[0] = amounts
            const[1:] = const[0]
            op(hsv, const, dst=hsv)


def augment_hsv(img, hgain=5, sgain=30, vgain=30):
    """In place: shift a random subset of hue (cyclic) / saturation / value (clipped) by random amounts.

    Upstream's random draws and integer arithmetic (``shift_hsv``), without its int16 copies and
    split/merge. All gains zero (~1 draw in 6): the colour round trip alone, as upstream."""
    gains = (np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] * np.random.randint(0, 2, 3)).astype(np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    shift_hsv(hsv, gains)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)


def hflip(img, boxes):
    """Mirror the image left-right (a new contiguous array: cv2.flip, one SIMD pass); xyxy boxes
    map to ``(w - x2, y1, w - x1, y2)``."""
    width = img.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return cv2.flip(np.ascontiguousarray(img), 1), boxes


def _uniform(value, center=0.0):
    """A scalar ``v`` means U(center - v, center + v); a pair means U(lo, hi)."""
    if isinstance(value, (int, float)):
        return random.uniform(center - value, center + value)
    if len(value) == 2:
        return random.uniform(value[0], value[1])
    raise ValueError(f"expected a number or a (low, high) pair, got {value!r}")


def get_affine_matrix(target_size, degrees=10.0, translate=0.1, scales=0.1, shear=10.0):
    """Random 2x3 matrix: rotation+scale about the origin, shear, then translation (pixels)."""
    twidth, theight = target_size
    angle = _uniform(degrees)
    scale = _uniform(scales, center=1.0)
    if scale <= 0.0:
        raise ValueError(f"affine scale must be positive, got {scale} from {scales!r}")
    rot = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=scale)
    shear_x = math.tan(math.radians(_uniform(shear)))
    shear_y = math.tan(math.radians(_uniform(shear)))
    mat = np.empty((2, 3))
    mat[0] = rot[0] + shear_y * rot[1]
    mat[1] = rot[1] + shear_x * rot[0]
    mat[0, 2] = _uniform(translate) * twidth
    mat[1, 2] = _uniform(translate) * theight
    return mat


def affine_boxes(boxes, mat, target_size):
    """Warp xyxy boxes with a 2x3 matrix: enclosing box of the 4 warped corners, clipped."""
    n = len(boxes)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    warped = (corners @ mat.T).reshape(n, 4, 2)
    out = np.concatenate([warped.min(axis=1), warped.max(axis=1)], axis=1)
    out[:, 0::2] = out[:, 0::2].clip(0, target_size[0])
    out[:, 1::2] = out[:, 1::2].clip(0, target_size[1])
    return out


def random_affine(img, targets, target_size=(640, 640), degrees=10.0, translate=0.1, scales=0.1, shear=10.0):
    """Warp ``img`` into ``target_size`` (w, h) and its xyxy+cls ``targets`` with the same matrix."""
    mat = get_affine_matrix(target_size, degrees, translate, scales, shear)
    img = cv2.warpAffine(img, mat, dsize=tuple(target_size), borderValue=(PAD_VALUE,) * 3)
    if len(targets):
        targets = targets.copy()
        targets[:, :4] = affine_boxes(targets[:, :4], mat, target_size)
    return img, targets


class TrainTransform:
    """HSV jitter, random flip, letterbox; labels -> ``[max_labels, 5]`` rows of (cls, cx, cy, w, h).

    The image comes out CHW uint8: upstream's float32 values, a quarter of the bytes (``letterbox``),
    as a transposed VIEW of a contiguous HWC array: the loader's ``collate`` copies it straight
    into a channels_last batch, so no HWC -> CHW copy is made anywhere (``np.ascontiguousarray``
    gives the plain CHW array to a caller that needs one).

    Boxes thinner than 2 px after resizing are dropped; a sample left without boxes is a negative
    (all-zero target), never a sample with degenerate boxes.
    """

    def __init__(self, max_labels=50, flip_prob=0.5, hsv_prob=1.0):
        self.max_labels = max_labels
        self.flip_prob = flip_prob
        self.hsv_prob = hsv_prob

    def __call__(self, image, targets, input_dim):
        boxes, labels = targets[:, :4], targets[:, 4]
        if random.random() < self.hsv_prob:
            image = np.ascontiguousarray(image)
            augment_hsv(image)
        if random.random() < self.flip_prob:
            image, boxes = hflip(image, boxes)
        image_t, r = letterbox(image, input_dim, swap=None, dtype=np.uint8)
        boxes = xyxy2cxcywh(boxes) * r
        keep = np.minimum(boxes[:, 2], boxes[:, 3]) > 1
        rows = np.concatenate([labels[keep, None], boxes[keep]], axis=1)[: self.max_labels]
        padded = np.zeros((self.max_labels, 5), dtype=np.float32)
        padded[: len(rows)] = rows
        return image_t.transpose(2, 0, 1), padded


class ValTransform:
    """Letterbox only (0-255 BGR, CHW float32); ``legacy=True`` gives the old RGB-normalised input."""

    MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
    STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)

    def __init__(self, swap=(2, 0, 1), legacy=False):
        self.swap = swap
        self.legacy = legacy

    def __call__(self, img, res, input_size):
        img, _ = letterbox(img, input_size, self.swap)
        if self.legacy:
            img = np.ascontiguousarray((img[::-1] / 255.0 - self.MEAN) / self.STD, dtype=np.float32)
        return img, np.zeros((1, 5), dtype=np.float32)
