"""detcore.evaluation.coco_eval: the faster evaluator gives pycocotools' numbers and pycocotools' summary text."""
import contextlib
import io
import json
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.evaluation import coco_eval


def _rows(gt_json, seed=0):
    """Ground truth jittered, 20% dropped, plus two low-score false positives per image."""
    gt = json.loads(gt_json.read_text())
    rng = np.random.default_rng(seed)
    rows = []
    for ann in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        jit = rng.normal(0, 0.1, 4) * [w, h, w, h]
        rows.append([ann["image_id"], x + jit[0], y + jit[1], max(1, w + jit[2]), max(1, h + jit[3]),
                     rng.uniform(0.3, 1), ann["category_id"]])
    for img in gt["images"]:
        for _ in range(2):
            rows.append([img["id"], rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(8, 60),
                         rng.uniform(8, 60), rng.uniform(0, 0.5), int(rng.integers(1, 5))])
    return np.array(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def gt_and_rows(shapes_coco):
    ann = shapes_coco / "annotations" / "instances_val2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    return gt, _rows(ann)


def _pycocotools(gt, rows):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        ev = COCOeval(gt, gt.loadRes(rows), "bbox")
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        text.truncate(0)
        text.seek(0)
        ev.summarize()
    return ev, text.getvalue()


def test_stats_equal_pycocotools(gt_and_rows):
    gt, rows = gt_and_rows
    ref, _ = _pycocotools(gt, rows)
    got = coco_eval.evaluate_bbox(gt, rows)
    assert 0.05 < ref.stats[0] < 0.95            # neither trivial nor perfect
    np.testing.assert_allclose(got.stats, ref.stats, atol=1e-4)
    np.testing.assert_allclose(got.eval["precision"], ref.eval["precision"], atol=1e-4)


def test_summary_text_is_pycocotools_text(gt_and_rows):
    gt, rows = gt_and_rows
    ref, text = _pycocotools(gt, rows)
    assert coco_eval.format_summary(ref.stats) == text
    assert len(text.splitlines()) == 12


def test_pycocotools_fallback_when_faster_is_missing(gt_and_rows, monkeypatch):
    gt, rows = gt_and_rows
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import now fails
    assert coco_eval._evaluator_class() is COCOeval
    ref, _ = _pycocotools(gt, rows)
    np.testing.assert_allclose(coco_eval.evaluate_bbox(gt, rows).stats, ref.stats, atol=0)
