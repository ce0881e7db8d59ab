"""SSD evaluation: detections -> COCO rows in original coordinates/ids, mAP against pycocotools."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detcore.evaluation import coco_eval
from detcore.evaluation.coco_eval import score
from ssd import evaluation as ev
from ssd.data import CocoDetection, collate


@pytest.fixture(scope="module")
def val_set(shapes_coco):
    return CocoDetection(shapes_coco / "val2017", shapes_coco / "annotations" / "instances_val2017.json",
                         train=False)


def gt_detections(dataset, img_ids, width_scale=1.0):
    """Decoded-format detections equal to the GT (optionally with widths scaled, left edge fixed)."""
    out = []
    for img_id in img_ids:
        boxes, labels = dataset.targets[img_id]
        boxes = torch.from_numpy(boxes.copy())
        boxes[:, 2] = boxes[:, 0] + (boxes[:, 2] - boxes[:, 0]) * width_scale
        out.append((boxes, torch.from_numpy(labels), torch.ones(len(labels))))
    return out


def test_rows_use_original_pixels_and_category_ids():
    decoded = [(torch.tensor([[0.1, 0.2, 0.5, 1.0]]), torch.tensor([2]), torch.tensor([0.75]))]
    rows = ev.detections_to_coco(decoded, torch.tensor([42]), torch.tensor([[200, 100]]), cat_ids=[3, 17, 40])
    # width 100, height 200: x = 10, y = 40, w = 40, h = 160; label 2 -> second sorted id 17
    np.testing.assert_allclose(rows, [[42, 10, 40, 40, 160, 0.75, 17]], rtol=1e-6)


def test_map_is_one_for_ground_truth_and_two_tenths_for_iou_058(val_set):
    sizes = torch.tensor([(val_set.coco.imgs[i]["height"], val_set.coco.imgs[i]["width"]) for i in val_set.ids])
    ids = torch.tensor(val_set.ids)
    perfect = ev.detections_to_coco(gt_detections(val_set, val_set.ids), ids, sizes, val_set.cat_ids)
    assert score(val_set.coco, perfect, val_set.ids).ap50_95 == pytest.approx(1.0)
    # Width x0.58 with the same left edge: IoU 0.58 passes thresholds 0.50 and 0.55 of the ten -> 0.2
    shrunk = ev.detections_to_coco(gt_detections(val_set, val_set.ids, 0.58), ids, sizes, val_set.cat_ids)
    assert score(val_set.coco, shrunk, val_set.ids).ap50_95 == pytest.approx(0.2)
    assert score(val_set.coco, np.zeros((0, 7)), val_set.ids).ap50_95 == 0.0


class ReplayEncoder:
    """Stands in for Encoder.decode_batch: returns the GT of the images the loader yields, in order."""

    def __init__(self, dataset):
        self.queue = gt_detections(dataset, dataset.ids)

    def decode_batch(self, ploc, plabel, criteria, max_output, nms_valid_thresh):
        out, self.queue = self.queue[:len(ploc)], self.queue[len(ploc):]
        return out


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x.new_zeros(len(x), 4, 1), x.new_zeros(len(x), 2, 1)


def test_evaluate_runs_the_whole_loader_and_restores_train_mode(val_set):
    loader = DataLoader(val_set, batch_size=5, collate_fn=collate)
    model = TinyModel().train()
    mean_ap = ev.evaluate(model, loader, ReplayEncoder(val_set), val_set, torch.device("cpu")).ap50_95
    assert mean_ap == pytest.approx(1.0) and model.training


def test_only_the_main_process_builds_the_pycocotools_index(shapes_coco, monkeypatch):
    """At COCO size the index costs seconds and ~1 GB; ranks other than 0 never ask for it."""
    fresh = CocoDetection(shapes_coco / "val2017", shapes_coco / "annotations" / "instances_val2017.json",
                          train=False)
    monkeypatch.setattr(coco_eval, "is_main_process", lambda: False)
    monkeypatch.setattr(coco_eval, "broadcast_object", lambda result, src: "rank 0's result")
    loader = DataLoader(fresh, batch_size=5, collate_fn=collate)
    result = ev.evaluate(TinyModel(), loader, ReplayEncoder(fresh), fresh, torch.device("cpu"))
    assert result == "rank 0's result" and "coco" not in vars(fresh.source)
