"""Augmentation facts that a bug-seeding run found unguarded, checked by observing outputs:

8. YOLOX HSV augmentation (Megvii YOLOX 0.3.0 ``augment_hsv(img, hgain=5, sgain=30, vgain=30)``):
   per image, integer offsets int(uniform(-1, 1) * gain), each of h/s/v kept with probability 1/2,
   hue wrapping modulo 180 (OpenCV's uint8 hue is 0..179), saturation and value clipped. So on a
   flat image the value moves by at most 29 and by 25+ in a fair share of draws, and a red hue
   near 0 stays red (wraps to 17x, never to a green);
9. the mosaic centre (``MosaicDetection.mosaic``) is uniform in [0.5, 1.5] x the input size, per
   axis;
10. the SSD random crop (MLPerf reference ``SSDCropping``): the choices are no crop, no IoU
    constraint, and min IoU 0.1 / 0.3 / 0.5 / 0.7 / 0.9; a window is accepted only when EVERY box
    has IoU above the chosen minimum (``((ious > min_iou) & (ious < max_iou)).all()``).
"""
import random

import cv2
import numpy as np

from ssd import data as ssd_data
from yolox.data import MosaicDetection, TrainTransform
from yolox.data.data_augment import augment_hsv


# ------------------------------------------------------------------ 8. HSV
def flat_bgr(h, s, v, size=(8, 8)):
    px = cv2.cvtColor(np.array([[[h, s, v]]], np.uint8), cv2.COLOR_HSV2BGR)
    return np.ascontiguousarray(np.broadcast_to(px, (*size, 3)))


def hsv_of(img_hwc):
    out = cv2.cvtColor(np.ascontiguousarray(img_hwc), cv2.COLOR_BGR2HSV).reshape(-1, 3)
    assert (out == out[0]).all()          # still flat
    return out[0].astype(int)


def test_hsv_value_offsets_span_the_released_gain_of_30():
    """Through TrainTransform (the training path, defaults): V = max(B, G, R) survives the
    HSV -> BGR -> HSV round trip exactly, so each draw shows its value offset directly."""
    np.random.seed(0)
    random.seed(0)
    base = flat_bgr(60, 200, 128)
    v0 = hsv_of(base)[2]
    transform = TrainTransform(max_labels=4, flip_prob=0.0, hsv_prob=1.0)
    targets = np.array([[1, 1, 6, 6, 0]], dtype=np.float32)
    offsets = []
    for _ in range(600):
        img, _ = transform(base.copy(), targets, (8, 8))
        offsets.append(hsv_of(img.transpose(1, 2, 0))[2] - v0)
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 29                    # int(uniform(-1, 1) * 30): |offset| < 30
    assert offsets.max() >= 25 and offsets.min() <= -25   # P(|offset| >= 25 | drawn) = 1/6
    assert 0.4 < np.mean(offsets == 0) < 0.65             # kept with p 1/2 (+ |u * 30| < 1)


def test_hsv_hue_wraps_at_180():
    """Hue 2 (red) with offsets in [-4, 4]: the result is 178..179 or 0..6 (+-1 for the round
    trip); wrapping at 256 would make 254 etc., which OpenCV reads as hue 74 (green)."""
    np.random.seed(1)
    base = flat_bgr(2, 255, 200)
    h0 = hsv_of(base)[0]
    seen = []
    for _ in range(400):
        img = base.copy()
        augment_hsv(img)
        seen.append(hsv_of(img)[0])
    seen = np.array(seen)
    shift = (seen - h0 + 90) % 180 - 90                   # circular hue shift in [-90, 90)
    assert np.abs(shift).max() <= 5                       # |int(u * 5)| <= 4, +1 rounding
    assert shift.max() >= 3 and shift.min() <= -3
    assert (seen >= 170).any()                            # some draws wrapped below 0 to 17x


# ------------------------------------------------------------------ 9. mosaic centre
class WholeImageBoxes:
    """Images exactly the input size, each with one box covering the whole image: quadrant 0's box
    in the mosaic is (xc - w, yc - h, xc, yc) clipped at 0, so its x2, y2 is the mosaic centre."""

    def __init__(self, h, w, n=4):
        self.h, self.w, self.n = h, w, n

    def __len__(self):
        return self.n

    def load_anno(self, index):
        return np.array([[0, 0, self.w, self.h, index]], dtype=np.float64)

    def pull_item(self, index):
        img = np.full((self.h, self.w, 3), 20 + 40 * index, np.uint8)
        return img, self.load_anno(index), (self.h, self.w), np.array([index])


def test_mosaic_centre_is_uniform_in_half_to_one_and_a_half_sizes():
    h, w = 48, 64
    ds = MosaicDetection(WholeImageBoxes(h, w), (h, w), preproc=TrainTransform())
    random.seed(3)
    centres = []
    for i in range(1500):
        _, labels, _ = ds.mosaic(i % 4)
        assert labels[0, 4] == i % 4
        centres.append(labels[0, 2:4])
    xc, yc = np.array(centres).T
    assert xc.min() >= 0.5 * w and xc.max() <= 1.5 * w
    assert yc.min() >= 0.5 * h and yc.max() <= 1.5 * h
    # spans (nearly) all of it: within 3 px of both ends (a miss has probability < e^-45)
    assert xc.min() <= 0.5 * w + 3 and xc.max() >= 1.5 * w - 3
    assert yc.min() <= 0.5 * h + 3 and yc.max() >= 1.5 * h - 3
    assert abs(xc.mean() - w) < 3 and abs(yc.mean() - h) < 3   # uniform around the middle


# ------------------------------------------------------------------ 10. SSD random crop
class ScriptedChoice(random.Random):
    """A Random whose ``choice`` returns scripted values (the last one repeats) and records the
    options it was offered; everything else is the seeded generator."""

    def __init__(self, seed, script):
        super().__init__(seed)
        self.script, self.offered = list(script), []

    def choice(self, seq):
        self.offered.append(tuple(seq))
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def test_ssd_crop_choices_are_the_references_seven():
    rng = ScriptedChoice(0, [ssd_data.NO_CROP])
    assert ssd_data.sample_crop(rng, np.array([[0.2, 0.2, 0.6, 0.6]])) is None
    (options,) = rng.offered
    assert len(options) == 7
    constrained = sorted(o for o in options if o != ssd_data.NO_CROP)
    assert constrained == [float("-inf"), 0.1, 0.3, 0.5, 0.7, 0.9]


def test_ssd_crop_at_min_iou_09_really_holds_09():
    whole = np.array([[0.0, 0.0, 1.0, 1.0]])     # IoU with a window = its area
    for seed in range(5):
        window = ssd_data.sample_crop(ScriptedChoice(seed, [0.9]), whole)
        assert window is not None
        assert ssd_data.pair_iou(whole, window)[0] > 0.9


def test_ssd_crop_needs_every_box_above_min_iou():
    """Box A is the whole image (IoU with a window = the window's area >= 0.09), box B a 0.05
    square (IoU <= 0.0025 / 0.09 < 0.1 with any window). At min IoU 0.1 A often passes and B never
    does, so no window of 300 trials is accepted and the next choice (no crop) is taken; accepting
    on ANY box would return a window."""
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.05, 0.05]])
    for seed in range(5):
        rng = ScriptedChoice(seed, [0.1, ssd_data.NO_CROP])
        assert ssd_data.sample_crop(rng, boxes, tries=300) is None
        assert len(rng.offered) == 2          # the 0.1 choice failed, then "no crop" was drawn
    # when both boxes can pass, a 0.1 window is found, and it holds for both
    both = np.array([[0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.7, 0.7]])
    for seed in range(5):
        window = ssd_data.sample_crop(ScriptedChoice(seed, [0.1, ssd_data.NO_CROP]), both, tries=300)
        assert window is not None and (ssd_data.pair_iou(both, window) > 0.1).all()
