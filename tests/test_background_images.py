"""Background images (no objects) are negatives: kept for training by both detectors in every
layout (except SSD on a COCO json, which keeps the MLPerf reference's filter), trained on with a
finite loss, and counted in evaluation, where detections on them are false positives."""
import math

import numpy as np
import pytest
import torch

from detcore.evaluation.coco_eval import score
from detcore.data.shapes import make_shapes
from detcore.data.layout import open_split
from yolox_tools import TINY, ssd_run


@pytest.fixture(scope="module")
def half_background(tmp_path_factory):
    """4 train / 2 val shapes images plus as many without objects, in the three layouts."""
    root = tmp_path_factory.mktemp("background")
    for fmt, bg in (("yolo", 4), ("coco", 2), ("voc", 2)):
        make_shapes(root / fmt, 4, 2, seed=1, fmt=fmt, background=bg)
    return root


def test_every_layout_keeps_its_background_images(half_background):
    from ssd.data import CocoDetection

    yolo = open_split(half_background / "yolo" / "data.yaml", "train")
    labels = half_background / "yolo" / "labels" / "train"
    # both YOLO conventions: image 5 (background 1) has no label file, image 6 an empty one
    assert not (labels / "000000000005.txt").exists() and (labels / "000000000006.txt").read_text() == ""
    assert len(yolo.ids) == 8 and int((yolo.table.counts == 0).sum()) >= 4
    coco = open_split(half_background / "coco", "train")              # images without annotations
    voc = open_split(half_background / "voc", "train")                # xmls without objects
    for src, n in ((coco, 6), (voc, 6)):
        assert len(src.ids) == n and int((src.table.counts == 0).sum()) >= 2
    # SSD: background kept for YOLO and VOC; on a COCO json the reference drops them
    assert len(CocoDetection(source=yolo, train=True)) == 8
    assert len(CocoDetection(source=voc, train=True)) == 6
    with_boxes = int((coco.table.counts > 0).sum())
    assert len(CocoDetection(source=coco, train=True)) == with_boxes < 6
    assert len(CocoDetection(source=coco, train=True, keep_background=True)) == 6
    assert len(CocoDetection(source=coco, train=False)) == 6          # evaluation keeps them all


def test_half_background_set_trains_both_detectors_with_finite_loss(half_background, tmp_path):
    data = half_background / "yolo" / "data.yaml"
    # SSD: two steps through ssd/train.py's own run (loader, encoder, loss)
    run = ssd_run(data, tmp_path / "ssd", "-b", "2", "--device", "cpu")
    assert len(run.train_set) == 8
    batches = iter(run.train_loader)
    seen_empty = False
    for _ in range(2):
        imgs, boxes, labels = next(batches)[:3]
        seen_empty |= bool(((labels > 0).sum(1) == 0).any())
        assert math.isfinite(float(run.step(imgs, boxes, labels, 1e-3)))
    assert seen_empty                                   # seed 0's first 4 samples hold a background
    # YOLOX: the exp's training loader (no mosaic: an image is an image), two optimiser steps
    from yolox.core.cli import build_exp
    from yolox.tools import train

    exp = build_exp(train.make_parser().parse_args(["-n", "yolox-nano", "--data_dir", str(data), *TINY]))
    exp.sync_classes()
    torch.manual_seed(0)
    model = exp.get_model()
    exp.model = model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loader = exp.get_data_loader(batch_size=4, is_distributed=False, no_aug=True)
    batches, empty = iter(loader), 0
    for _ in range(2):
        imgs, targets = next(batches)[:2]
        empty += int((targets.sum(dim=(1, 2)) == 0).sum())
        loss = model(imgs.float(), targets)["total_loss"]
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert empty >= 4                         # the 4 background images (an image may draw 0 shapes)


def test_detections_on_background_images_are_false_positives(half_background):
    """Perfect detections of every object plus one confident box on each background image: the
    same COCO metric path counts each as a false positive (per image, and in precision / AP)."""
    val = open_split(half_background / "yolo" / "data.yaml", "val")
    t = val.table
    background = t.ids[t.counts == 0]
    assert len(background) == 4 and len(val.ids) == 6
    owner = np.repeat(t.ids, t.counts)
    xywh = np.concatenate([t.boxes[:, :2], t.boxes[:, 2:] - t.boxes[:, :2]], axis=1)
    hits = np.column_stack([owner, xywh, np.full(len(owner), 0.9), t.cls])
    fake = np.column_stack([background, np.tile([10.0, 10.0, 50.0, 50.0], (len(background), 1)),
                            np.full(len(background), 0.95), np.zeros(len(background))])
    clean = score(val.coco, hits, val.ids)
    noisy = score(val.coco, np.concatenate([hits, fake]), val.ids)
    assert clean.stats[1] == pytest.approx(1.0)
    per_image = noisy.classes.per_image
    assert all(per_image[int(i)][1] == 1 for i in background)          # fp = 1 on each background
    assert sum(per_image[int(i)][0] for i in t.ids[t.counts > 0]) == len(owner)   # every object a tp
    assert noisy.stats[1] < clean.stats[1]                               # AP50 falls
    assert noisy.classes.precision[0] < 1.0                              # circle's precision too
