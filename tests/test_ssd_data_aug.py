"""SSD data pipeline: crop / flip box math by hand, crop constraints, label mapping, batching, sharding."""
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from accel.errors import UserError
from ssd import data
from ssd import data as ssd_data


class ScriptedRng(random.Random):
    """A Random whose crop choice, flip coin and uniforms are fixed, to make the transform exact."""

    def __init__(self, choice, coin, uniforms=None):
        super().__init__(0)
        self._choice, self._coin, self._uniforms = choice, coin, list(uniforms or [])

    def choice(self, seq):
        return self._choice

    def random(self):
        return self._coin

    def uniform(self, a, b):
        return self._uniforms.pop(0) if self._uniforms else (a + b) / 2  # midpoint = identity jitter


def test_pair_iou_by_hand():
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 0.9, 0.9]])
    iou = data.pair_iou(boxes, np.array([0.0, 0.0, 0.5, 0.5]))
    # second box: overlap 0.25*0.25 = 0.0625, union 0.25 + 0.25 - 0.0625
    np.testing.assert_allclose(iou, [1.0, 0.0625 / 0.4375, 0.0])


def test_crop_boxes_keeps_centres_inside_and_renormalises():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3],     # centre inside
                      [0.5, 0.5, 0.9, 0.9],     # centre (0.7, 0.7): x outside the window
                      [0.4, 0.5, 0.7, 0.9]],    # centre inside, clipped on the right and bottom
                     dtype=np.float32)
    labels = np.array([1, 2, 3])
    window = np.array([0.0, 0.0, 0.6, 0.8])
    out, out_labels = data.crop_boxes(boxes, labels, window)
    np.testing.assert_array_equal(out_labels, [1, 3])
    np.testing.assert_allclose(out, [[0.1 / 0.6, 0.1 / 0.8, 0.3 / 0.6, 0.3 / 0.8],
                                     [0.4 / 0.6, 0.5 / 0.8, 1.0, 1.0]], rtol=1e-6)


def test_sample_crop_respects_size_aspect_and_iou_constraints():
    boxes = np.array([[0.2, 0.2, 0.6, 0.7], [0.5, 0.1, 0.9, 0.4]])
    windows = [data.sample_crop(random.Random(s), boxes) for s in range(300)]
    crops = [w for w in windows if w is not None]
    assert 0 < len(crops) < len(windows)  # "no crop" is one of the seven choices
    for w in crops:
        width, height = w[2] - w[0], w[3] - w[1]
        assert 0.3 <= width <= 1.0 and 0.3 <= height <= 1.0 and 0.5 <= width / height <= 2.0
        assert (w[:2] >= 0).all() and (w[2:] <= 1.0 + 1e-12).all()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((centre > w[:2]) & (centre < w[2:])).all(axis=1).any()
    # Forced choice 0.7: every accepted window overlaps every box with IoU > 0.7.
    whole = np.array([[0.0, 0.0, 1.0, 1.0]])
    for s in range(20):
        rng = random.Random(s)
        rng.choice = lambda seq: 0.7
        w = data.sample_crop(rng, whole)
        assert (w[2] - w[0]) * (w[3] - w[1]) > 0.7  # IoU with the whole image = window area
    assert data.sample_crop(random.Random(0), np.zeros((0, 4))) is None


def test_train_transform_flip_by_hand():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    boxes = np.array([[0.1, 0.2, 0.4, 0.5]], dtype=np.float32)
    tensor, out_boxes, out_labels = data.train_transform(ScriptedRng(data.NO_CROP, 0.0), img, boxes,
                                                         np.array([2]))
    np.testing.assert_allclose(out_boxes, [[0.6, 0.2, 0.9, 0.5]], rtol=1e-6)
    np.testing.assert_array_equal(out_labels, [2])
    expected = data.to_normalised_tensor(img.transpose(Image.FLIP_LEFT_RIGHT))
    assert tensor.shape == (3, 300, 300)
    assert (tensor - expected).abs().mean() < 0.02  # jitter at identity factors (hue via HSV round trip)


def test_train_transform_crop_by_hand():
    img = Image.new("RGB", (200, 100))
    img.paste((255, 0, 0), (0, 0, 100, 100))  # left half red, right half black
    boxes = np.array([[0.1, 0.2, 0.3, 0.6]], dtype=np.float32)
    # crop choice "no IoU constraint", w=0.5, h=0.8, left=0.0, top=0.1, then no flip
    rng = ScriptedRng(float("-inf"), 0.9, uniforms=[0.5, 0.8, 0.0, 0.1])
    tensor, out_boxes, _ = data.train_transform(rng, img, boxes, np.array([1]))
    np.testing.assert_allclose(out_boxes, [[0.2, 0.125, 0.6, 0.625]], rtol=1e-6)
    red = (1.0 - data.IMAGENET_MEAN[0]) / data.IMAGENET_STD[0]
    assert tensor[0].mean() == pytest.approx(red, abs=0.05)  # the crop is the all-red left half


def write_coco(root, images, annotations, categories):
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (90, 120, 30)).save(root / "imgs" / im["file_name"])
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root / "imgs", ann


def test_label_mapping_targets_and_filters(tmp_path):
    images = [{"id": 5, "file_name": "a.jpg", "width": 200, "height": 100},
              {"id": 9, "file_name": "b.jpg", "width": 50, "height": 50}]
    anns = [{"id": 1, "image_id": 5, "category_id": 12, "bbox": [20, 10, 100, 50], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 200, 100], "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 4, "image_id": 9, "category_id": 7, "bbox": [5, 5, 0, 10], "iscrowd": 0}]
    cats = [{"id": 12, "name": "z"}, {"id": 3, "name": "x"}, {"id": 7, "name": "y"}]
    img_dir, ann = write_coco(tmp_path, images, anns, cats)
    train = data.CocoDetection(img_dir, ann, train=True)
    assert train.label_map == {3: 1, 7: 2, 12: 3} and train.num_classes == 4
    assert train.ids == [5]  # image 9 has only a zero-width box
    boxes, labels = train.targets[5]
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.6, 0.6], [0, 0, 1, 1]])
    np.testing.assert_array_equal(labels, [3, 1])  # crowd annotation dropped
    val = data.CocoDetection(img_dir, ann, train=False)
    assert val.ids == [5, 9]
    img, vboxes, vlabels, img_id, size = val[0]
    assert img.shape == (3, 300, 300) and img_id == 5 and size == (100, 200)
    torch.testing.assert_close(vlabels, torch.tensor([3, 1]))


def test_collate_pads_with_label_zero():
    a = (torch.zeros(3, 300, 300), torch.tensor([[0.1, 0.1, 0.2, 0.2]]), torch.tensor([4]), 7, (10, 20))
    b = (torch.ones(3, 300, 300), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 8, (30, 40))
    imgs, boxes, labels, ids, sizes = data.collate([a, b])
    assert imgs.shape == (2, 3, 300, 300) and boxes.shape == (2, 1, 4)
    torch.testing.assert_close(labels, torch.tensor([[4], [0]]))
    torch.testing.assert_close(ids, torch.tensor([7, 8]))
    torch.testing.assert_close(sizes, torch.tensor([[10, 20], [30, 40]]))


def test_epoch_sampler_shards_and_resumes():
    shards = [data.EpochSampler(10, 2, r, 2, seed=3) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    lists = [list(s) for s in shards]
    assert all(len(x) == 4 for x in lists)  # 5 per rank, 2 whole batches of 2
    assert not set(lists[0]) & set(lists[1])
    resumed = data.EpochSampler(10, 2, 0, 2, seed=3)
    resumed.set_epoch(1, skip_batches=1)
    assert list(resumed) == lists[0][2:] and len(resumed) == 2
    shards[0].set_epoch(2)
    assert list(shards[0]) != lists[0]  # new permutation each epoch


def test_bad_data_is_user_error(tmp_path):
    with pytest.raises(UserError, match="--data"):
        data.coco_paths(tmp_path / "missing")
    img_dir, ann = write_coco(tmp_path, [], [], [{"id": 1, "name": "a"}])
    with pytest.raises(UserError, match="no images"):
        data.CocoDetection(img_dir, ann, train=True)
    img_dir, ann = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
                              [], [{"id": 1, "name": "a"}])
    (img_dir / "a.jpg").unlink()
    with pytest.raises(UserError, match="1 of 1 images listed in .* are missing or empty .*a.jpg"):
        data.CocoDetection(img_dir, ann, train=False)
    ann.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        data.CocoDetection(img_dir, ann, train=True)


# --------------------------------------------------------------------- the reference's crop choices
# MLPerf reference ``SSDCropping``: the choices are no crop, no IoU constraint, and min IoU
# 0.1 / 0.3 / 0.5 / 0.7 / 0.9; a window is accepted only when EVERY box has IoU above the chosen
# minimum (``((ious > min_iou) & (ious < max_iou)).all()``).

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
