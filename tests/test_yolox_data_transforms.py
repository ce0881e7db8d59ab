"""Box and image transforms of yolox.data checked against hand-computed values."""
import random

import cv2
import numpy as np
import pytest

from yolox.data import TrainTransform, ValTransform
from yolox.data.data_augment import (affine_boxes, augment_hsv, get_affine_matrix, hflip, letterbox, shift_hsv,
                                     random_affine, xyxy2cxcywh)


def test_letterbox_scales_keeps_aspect_and_pads_114():
    img = np.full((100, 200, 3), 7, np.uint8)                  # h=100, w=200
    out, r = letterbox(img, (64, 64))
    assert r == pytest.approx(0.32) and out.shape == (3, 64, 64) and out.dtype == np.float32
    assert out.flags.c_contiguous
    assert (out[:, :32, :] == 7).all() and (out[:, 32:, :] == 114).all()   # int(100*0.32) = 32 rows kept
    hwc, _ = letterbox(np.full((50, 20, 3), 9, np.uint8), (100, 60), swap=None)
    assert hwc.shape == (100, 60, 3) and (hwc[:, :40] == 9).all() and (hwc[:, 40:] == 114).all()  # r = 2


def test_xyxy2cxcywh():
    np.testing.assert_allclose(xyxy2cxcywh(np.array([[10.0, 20, 30, 60]])), [[20, 40, 20, 40]])


def test_hflip_mirrors_image_and_boxes():
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, 0] = 255
    out, boxes = hflip(img, np.array([[10.0, 20, 30, 40], [0, 0, 100, 50]]))
    np.testing.assert_allclose(boxes, [[70, 20, 90, 40], [0, 0, 100, 50]])
    assert (out[:, 99] == 255).all() and (out[:, 0] == 0).all()


def test_affine_boxes_translation_rotation_scale():
    boxes = np.array([[10.0, 20, 30, 60]])
    shift = np.array([[1.0, 0, 5], [0, 1, -3]])
    np.testing.assert_allclose(affine_boxes(boxes, shift, (100, 100)), [[15, 17, 35, 57]])
    rot90 = np.array([[0.0, -1, 100], [1, 0, 0]])              # (x, y) -> (100 - y, x)
    np.testing.assert_allclose(affine_boxes(boxes, rot90, (100, 100)), [[40, 10, 80, 30]])
    np.testing.assert_allclose(affine_boxes(boxes, rot90, (50, 20)), [[40, 10, 50, 20]])   # clipped
    rot45 = cv2.getRotationMatrix2D((0, 0), 45, 1.0)           # y in [-s, s] gets clipped at 0
    s = np.sqrt(0.5)
    np.testing.assert_allclose(affine_boxes(np.array([[0.0, 0, 1, 1]]), rot45, (9, 9)), [[0, 0, 2 * s, s]], atol=1e-12)


def test_get_affine_matrix_pure_scale_and_bounds():
    mat = get_affine_matrix((100, 80), degrees=0.0, translate=0.0, scales=(2.0, 2.0), shear=0.0)
    np.testing.assert_allclose(mat, [[2, 0, 0], [0, 2, 0]], atol=1e-12)
    random.seed(0)
    for _ in range(20):
        mat = get_affine_matrix((100, 80), degrees=10.0, translate=0.1, scales=(0.5, 1.5), shear=2.0)
        assert abs(mat[0, 2]) <= 10 and abs(mat[1, 2]) <= 8
        assert 0.5 * 0.95 <= np.sqrt(abs(np.linalg.det(mat[:, :2]))) <= 1.5 * 1.05


def test_random_affine_box_encloses_warped_pixels():
    random.seed(3)
    img = np.zeros((200, 200, 3), np.uint8)
    img[40:100, 60:150] = 255                                   # box (60, 40, 150, 100)
    targets = np.array([[60.0, 40, 150, 100, 1]])
    for _ in range(5):
        out, new = random_affine(img, targets, (160, 120), degrees=30.0, translate=0.1, scales=(0.6, 1.0), shear=5.0)
        assert out.shape == (120, 160, 3) and new[0, 4] == 1
        ys, xs = np.nonzero(out[..., 0] > 127)
        np.testing.assert_allclose(new[0, :4], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=2.0)
    _, empty = random_affine(img, np.zeros((0, 5)), (160, 120))
    assert empty.shape == (0, 5)


def test_augment_hsv_matches_int16_formula():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    np.random.seed(5)
    gains = (np.random.uniform(-1, 1, 3) * [5, 30, 30] * np.random.randint(0, 2, 3)).astype(np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1:] = np.clip(hsv[..., 1:] + gains[1:], 0, 255)
    expected = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    np.random.seed(5)
    augment_hsv(img)
    np.testing.assert_array_equal(img, expected)


@pytest.mark.parametrize("gains", [(0, 0, 0), (4, 0, 0), (-4, 0, 0), (0, 29, 0), (0, 0, -29), (0, -17, 25),
                                   (3, -17, 25), (-1, 1, -1), (179, 255, -255), (-5, -300, 300)])
def test_shift_hsv_equals_the_int16_formula_on_every_value(gains):
    """Every hue 0..179 against every saturation / value 0..255 (wrap and both clips reached)."""
    hue, level = np.meshgrid(np.arange(180), np.arange(256), indexing="ij")
    hsv = np.stack([hue, level, 255 - level], axis=-1).astype(np.uint8)
    expected = hsv.astype(np.int16)
    expected[..., 0] = (expected[..., 0] + gains[0]) % 180
    expected[..., 1:] = np.clip(expected[..., 1:] + np.array(gains[1:]), 0, 255)
    shift_hsv(hsv, np.array(gains, dtype=np.int16))
    np.testing.assert_array_equal(hsv, expected.astype(np.uint8))


def test_train_transform_letterbox_flip_filter_and_padding():
    img = np.zeros((100, 200, 3), np.uint8)
    targets = np.array([[10.0, 20, 50, 60, 2], [0, 0, 1, 1, 3]])   # 2nd box is 0.5 px after r=0.5
    image, labels = TrainTransform(max_labels=5, flip_prob=0.0, hsv_prob=0.0)(img, targets, (100, 100))
    assert image.shape == (3, 100, 100) and labels.shape == (5, 5) and labels.dtype == np.float32
    # uint8 for the loader (a quarter of the bytes), the same pixels as the float32 letterbox
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, letterbox(img, (100, 100))[0])
    np.testing.assert_allclose(labels[0], [2, 15, 20, 20, 20])
    assert (labels[1:] == 0).all()
    _, flipped = TrainTransform(max_labels=5, flip_prob=1.0, hsv_prob=0.0)(img, targets, (100, 100))
    np.testing.assert_allclose(flipped[0], [2, 85, 20, 20, 20])     # x: 200-50..200-10 -> cx 170*0.5


def test_train_transform_truncates_to_max_labels_and_handles_empty():
    img = np.zeros((64, 64, 3), np.uint8)
    many = np.column_stack([np.arange(8) * 4.0, np.zeros(8), np.arange(8) * 4.0 + 10, np.full(8, 10.0), np.arange(8)])
    _, labels = TrainTransform(max_labels=3, flip_prob=0.0, hsv_prob=0.0)(img, many, (64, 64))
    np.testing.assert_allclose(labels[:, 0], [0, 1, 2])
    image, labels = TrainTransform(max_labels=4)(img, np.zeros((0, 5)), (32, 32))
    assert image.shape == (3, 32, 32) and labels.shape == (4, 5) and not labels.any()


def test_val_transform_plain_and_legacy():
    img = np.full((20, 40, 3), 255, np.uint8)
    out, target = ValTransform()(img, None, (40, 40))
    assert out.shape == (3, 40, 40) and (out[:, :20] == 255).all() and target.shape == (1, 5)
    legacy, _ = ValTransform(legacy=True)(img, None, (40, 40))
    np.testing.assert_allclose(legacy[:, 0, 0], (1 - ValTransform.MEAN.ravel()) / ValTransform.STD.ravel(), rtol=1e-5)


# ---------------------------------------------------------------- HSV offsets of the released gains
# Megvii YOLOX 0.3.0 ``augment_hsv(img, hgain=5, sgain=30, vgain=30)``: per image, integer offsets
# int(uniform(-1, 1) * gain), each of h/s/v kept with probability 1/2, hue wrapping modulo 180
# (OpenCV's uint8 hue is 0..179), saturation and value clipped. So on a flat image the value moves
# by at most 29 and by 25+ in a fair share of draws, and a red hue near 0 stays red (wraps to 17x,
# never to a green).

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
