"""Mosaic, affine, MixUp, mosaic switch-off, samplers and worker seeding."""
import itertools
import random

import numpy as np
import torch

from yolox.data import (DataLoader, InfiniteSampler, MosaicDetection, TrainTransform, YoloBatchSampler,
                        worker_init_reset_seed)

BG = 100


def colour(cls):
    return 10 + 40 * cls


class StubDataset:
    """Images of known sizes: background BG, one box (class = index) filled with ``colour(index)``."""

    def __init__(self, sizes, boxes):
        self.sizes, self.boxes = sizes, boxes

    def __len__(self):
        return len(self.sizes)

    def load_anno(self, index):
        box = self.boxes[index]
        return np.zeros((0, 5)) if box is None else np.array([[*box, index]], dtype=np.float64)

    def pull_item(self, index):
        h, w = self.sizes[index]
        img = np.full((h, w, 3), BG, np.uint8)
        labels = self.load_anno(index)
        for x1, y1, x2, y2, cls in labels.astype(int):
            img[y1:y2, x1:x2] = colour(cls)
        return img, labels.copy(), (h, w), np.array([index])


def stub():
    sizes = [(32, 32), (64, 32), (16, 32), (32, 64)]
    boxes = [(4, 4, 20, 28), (8, 10, 30, 60), (2, 2, 30, 14), None]
    return StubDataset(sizes, boxes)


def assert_boxes_hold_their_colour(img_hwc, boxes_xyxy, classes):
    """Every box's interior (1 px margin for interpolation) shows exactly its source colour."""
    for (x1, y1, x2, y2), cls in zip(np.round(boxes_xyxy).astype(int), classes.astype(int)):
        inner = img_hwc[y1 + 1:y2 - 1, x1 + 1:x2 - 1]
        assert inner.size and (inner == colour(cls)).all(), (x1, y1, x2, y2, cls)


def test_mosaic_canvas_and_boxes():
    ds = MosaicDetection(stub(), (64, 64), preproc=TrainTransform())
    random.seed(1)
    for idx in range(4):
        canvas, labels, img_id = ds.mosaic(idx)
        assert canvas.shape == (128, 128, 3) and canvas.dtype == np.uint8 and img_id[0] == idx
        assert (labels[:, :4] >= 0).all() and (labels[:, [0, 2]] <= 128).all() and (labels[:, [1, 3]] <= 128).all()
        assert (labels[:, 2] - labels[:, 0] > 1).all() and (labels[:, 3] - labels[:, 1] > 1).all()
        assert_boxes_hold_their_colour(canvas, labels[:, :4], labels[:, 4])


def test_mosaic_identity_affine_gives_top_left_window():
    ds = MosaicDetection(stub(), (64, 64), preproc=TrainTransform(max_labels=10, flip_prob=0.0, hsv_prob=0.0),
                         degrees=0.0, translate=0.0, mosaic_scale=(1.0, 1.0), shear=0.0, enable_mixup=False)
    random.seed(7)
    seen = 0
    for idx in range(8):
        img, target, info, _ = ds[(True, idx % 4)]
        assert img.shape == (3, 64, 64) and target.shape == (10, 5) and info == (64, 64)
        rows = target[target.any(axis=1)]
        xyxy = np.concatenate([rows[:, 1:3] - rows[:, 3:5] / 2, rows[:, 1:3] + rows[:, 3:5] / 2], axis=1)
        assert_boxes_hold_their_colour(img.transpose(1, 2, 0), xyxy, rows[:, 0])
        seen += len(rows)
    assert seen > 0


def test_mosaic_with_random_affine_and_mixup_keeps_boxes_in_image():
    ds = MosaicDetection(stub(), (64, 96), preproc=TrainTransform(max_labels=20), degrees=10.0, translate=0.1,
                         mosaic_scale=(0.5, 1.5), shear=2.0, enable_mixup=True, mixup_prob=1.0)
    random.seed(0)
    np.random.seed(0)
    for idx in range(12):
        img, target, _, _ = ds[(True, idx % 4)]
        assert img.shape == (3, 64, 96) and target.shape == (20, 5)
        rows = target[target.any(axis=1)]
        assert (rows[:, 3:] > 1).all()
        assert (rows[:, 1] - rows[:, 3] / 2 >= -1e-3).all() and (rows[:, 1] + rows[:, 3] / 2 <= 96 + 1e-3).all()
        assert (rows[:, 2] - rows[:, 4] / 2 >= -1e-3).all() and (rows[:, 2] + rows[:, 4] / 2 <= 64 + 1e-3).all()


def test_mixup_blends_half_and_appends_boxes_from_an_image_with_boxes():
    data = StubDataset([(64, 64), (64, 64)], [None, (8, 16, 40, 48)])   # only image 1 has a box
    ds = MosaicDetection(data, (64, 64), preproc=TrainTransform(), mixup_scale=(1.0, 1.0))
    origin = np.full((64, 64, 3), 200, np.uint8)
    origin_labels = np.array([[0.0, 0, 10, 10, 3]])
    random.seed(0)
    for _ in range(6):
        img, labels = ds.mixup(origin, origin_labels, (64, 64))
        assert labels.shape == (2, 5)
        np.testing.assert_array_equal(labels[0], origin_labels[0])
        assert labels[1].tolist() in ([8, 16, 40, 48, 1], [64 - 40, 16, 64 - 8, 48, 1])   # maybe flipped
        x1, y1, x2, y2 = labels[1, :4].astype(int)
        assert (img[y1:y2, x1:x2] == (200 + colour(1)) // 2).all()
        outside = np.ones((64, 64), bool)
        outside[y1:y2, x1:x2] = False
        assert (img[outside] == (200 + BG) // 2).all()


def test_close_mosaic_and_sampler_flag_switch_to_plain_images():
    ds = MosaicDetection(stub(), (64, 64), preproc=TrainTransform(flip_prob=0.0, hsv_prob=0.0))
    assert ds[(True, 1)][2] == (64, 64)                    # mosaic sample
    assert ds[(False, 1)][2] == (64, 32)                   # the sampler's flag turns it off per item
    ds.close_mosaic()
    img, target, info, img_id = ds[(True, 1)]
    assert info == (64, 32) and img_id[0] == 1
    np.testing.assert_allclose(target[0], [1, 19, 35, 22, 50])   # box (8,10,30,60), r = 1


def test_infinite_sampler_is_seeded_and_shards_ranks():
    first = list(itertools.islice(iter(InfiniteSampler(10, seed=3)), 30))
    assert first == list(itertools.islice(iter(InfiniteSampler(10, seed=3)), 30))
    assert all(sorted(first[i:i + 10]) == list(range(10)) for i in (0, 10, 20))
    assert first[:10] != first[10:20]
    r0 = list(itertools.islice(iter(InfiniteSampler(10, seed=3, rank=0, world_size=2)), 5))
    r1 = list(itertools.islice(iter(InfiniteSampler(10, seed=3, rank=1, world_size=2)), 5))
    assert r0 == first[0:10:2] and r1 == first[1:10:2] and len(InfiniteSampler(10, world_size=2)) == 5
    assert list(itertools.islice(iter(InfiniteSampler(4, shuffle=False)), 6)) == [0, 1, 2, 3, 0, 1]


def test_loader_close_mosaic_reaches_the_batch_sampler():
    ds = MosaicDetection(stub(), (64, 64), preproc=TrainTransform(max_labels=8))
    sampler = YoloBatchSampler(InfiniteSampler(len(ds), seed=0), batch_size=2, drop_last=False)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=0)
    batches = iter(loader)
    imgs, targets, info, ids = next(batches)
    assert imgs.shape == (2, 3, 64, 64) and targets.shape == (2, 8, 5) and ids.shape == (2, 1)
    loader.close_mosaic()
    assert sampler.mosaic is False and ds.enable_mosaic is False
    assert next(iter(sampler))[0][0] is False


def test_worker_init_reset_seed_follows_torch_seed():
    def draw(seed):
        torch.manual_seed(seed)
        worker_init_reset_seed(0)
        return random.random(), float(np.random.rand())

    assert draw(11) == draw(11) and draw(11) != draw(12)


class Draws:
    """Stands in for ``random`` inside MixUp: jitter 1, no flip, and the given randint results."""

    def __init__(self, ints):
        self.ints = list(ints)

    def uniform(self, a, b):
        return 1.0

    def random(self):
        return 0.0            # flip = random() > 0.5 -> no flip

    def randint(self, a, b):
        value = self.ints.pop(0)
        assert a <= value <= b, (a, value, b)
        return value


def test_mixup_blends_the_drawn_window_of_the_padded_copy_image(monkeypatch):
    """By hand: image 1 (64 x 32, box (8,10)-(30,60)) letterboxed into 64 x 64 is the copy image;
    MixUp blends the origin 50/50 with its (y_off, x_off) window, padded with 114 where the window
    runs past the copy image (origin larger than the copy image)."""
    import yolox.data.datasets.mosaicdetection as mosaic_module
    ds = MosaicDetection(stub(), (64, 64), preproc=TrainTransform())
    copy = np.full((64, 64, 3), 114, np.uint8)
    copy[:, :32] = BG
    copy[10:60, 8:30] = colour(1)
    origin = np.full((40, 48, 3), 200, np.uint8)
    monkeypatch.setattr(mosaic_module, "random", Draws([1, 16, 12]))   # copy = image 1; y 16, x 12
    img, labels = ds.mixup(origin, np.zeros((0, 5)), (64, 64))
    expected = ((origin.astype(int) + copy[16:56, 12:60]) / 2)
    assert np.abs(img.astype(int) - expected).max() <= 1          # cv2 rounds halves
    assert labels.tolist() == [[0.0, 0.0, 18.0, 40.0, 1.0]]       # (8-12, 10-16, 30-12, 60-16), clipped
    big = np.full((80, 70, 3), 200, np.uint8)                     # larger than the copy: offsets 0
    monkeypatch.setattr(mosaic_module, "random", Draws([1, 0, 0]))
    img, _ = ds.mixup(big, np.zeros((0, 5)), (64, 64))
    padded = np.full((80, 70, 3), 114, np.uint8)
    padded[:64, :64] = copy
    assert np.abs(img.astype(int) - (big.astype(int) + padded) / 2).max() <= 1


# ------------------------------------------------------------------------------------ mosaic centre
# The mosaic centre (``MosaicDetection.mosaic``) is uniform in [0.5, 1.5] x the input size, per axis.

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
