"""COCOEvaluator against pycocotools itself on detections whose AP is known."""
import contextlib
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolox.evaluators import coco_summary, detections_to_rows


@pytest.fixture(scope="module")
def coco_gt(shapes_coco):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(shapes_coco / "annotations" / "instances_val2017.json"))


def gt_rows(coco):
    anns = coco.loadAnns(coco.getAnnIds())
    return np.array([[a["image_id"], *a["bbox"], 1.0, a["category_id"]] for a in anns], dtype=np.float64)


def pycocotools_stats(coco, rows):
    """Reference: the plain pycocotools recipe with list-of-dict results."""
    dets = [{"image_id": int(r[0]), "bbox": list(r[1:5]), "score": float(r[5]),
             "category_id": int(r[6])} for r in rows]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_detections_score_one(coco_gt):
    rows = gt_rows(coco_gt)
    assert len(rows) > 10
    ap, ap50, summary = coco_summary(coco_gt, rows, coco_gt.getImgIds())
    assert ap == pytest.approx(1.0) and ap50 == pytest.approx(1.0)
    lines = [ln for ln in summary.splitlines() if ln.strip().startswith("Average")]
    assert len(lines) == 12 and lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95")
    assert "circle" in summary and "star" in summary          # per-class table


def test_imperfect_detections_equal_pycocotools(coco_gt):
    rng = np.random.default_rng(0)
    rows = gt_rows(coco_gt)
    rows[:, 1:3] += rng.normal(0, 3, size=(len(rows), 2))    # shifted boxes
    rows[:, 5] = rng.uniform(0.1, 1.0, size=len(rows))       # random scores
    rows[::4, 6] = rows[::4, 6] % 4 + 1                      # every 4th box gets a wrong class
    ap, ap50, _ = coco_summary(coco_gt, rows, coco_gt.getImgIds())
    ref = pycocotools_stats(coco_gt, rows)
    assert ap == pytest.approx(ref[0]) and ap50 == pytest.approx(ref[1])
    assert 0.05 < ap < 0.95


def test_no_detections_is_zero(coco_gt):
    assert coco_summary(coco_gt, np.zeros((0, 7)), coco_gt.getImgIds())[:2] == (0.0, 0.0)


def test_detections_to_rows_undoes_letterbox():
    # 200x100 (h x w) image into a 400x400 input: scale 2; box (20,40)-(60,100) in input pixels
    out = [torch.tensor([[20.0, 40.0, 60.0, 100.0, 0.5, 0.8, 2.0]]), torch.zeros(0, 7)]
    rows = detections_to_rows(out, (torch.tensor([200, 50]), torch.tensor([100, 50])),
                              torch.tensor([7, 8]), (400, 400), [1, 3, 5, 9])
    assert rows.shape == (1, 7)
    np.testing.assert_allclose(rows[0], [7, 10, 20, 20, 30, 0.4, 5])


class OracleModel(nn.Module):
    """Returns each val image's ground truth as a decoded YOLOX output, in loader order."""

    def __init__(self, coco, ids, class_ids, size, num_anchors=50):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = []
        for img_id in ids:
            info = coco.loadImgs(img_id)[0]
            r = min(size[0] / info["height"], size[1] / info["width"])
            out = torch.zeros(num_anchors, 5 + len(class_ids))
            for j, a in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=img_id))):
                x, y, w, h = (v * r for v in a["bbox"])
                out[j, :5] = torch.tensor([x + w / 2, y + h / 2, w, h, 1.0])
                out[j, 5 + class_ids.index(a["category_id"])] = 1.0
            self.outputs.append(out)

    def forward(self, x):
        batch, self.outputs = self.outputs[:x.shape[0]], self.outputs[x.shape[0]:]
        return torch.stack(batch)


def test_evaluator_end_to_end_with_oracle(shapes_coco):
    from yolox.exp import get_exp

    exp = get_exp(exp_name="yolox-nano")
    exp.merge(["num_classes", "4", "test_size", "160,160", "data_num_workers", "0"])
    exp.data_dir = str(shapes_coco)
    evaluator = exp.get_evaluator(batch_size=5, is_distributed=False)
    ds = evaluator.dataloader.dataset
    model = OracleModel(ds.coco, list(ds.ids), list(ds.class_ids), exp.test_size)
    (ap, ap50, summary), rows = exp.eval(model, evaluator, False, return_outputs=True)
    assert ap50 == pytest.approx(1.0)
    assert ap > 0.9             # letterbox round trip keeps IoU near 1
    assert len(rows) == len(ds.coco.getAnnIds())
    assert "per class at IoU 0.50, confidence" in summary
