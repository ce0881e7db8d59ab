"""detcore.evaluation.class_stats: the per-class table, curves, confusion matrix and per-image errors.

A hand-computed case pins every number; random cases check the matching against pycocotools'
own per-image evaluation (``evalImgs``) and the APs against its ``precision`` array."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.evaluation import class_stats as cs
from detcore.evaluation import coco_eval


def _coco(images, anns, names=("a", "b")):
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in images],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
          "annotations": [{"id": j + 1, "image_id": img, "category_id": cat, "bbox": list(box),
                           "area": box[2] * box[3], "iscrowd": crowd}
                          for j, (img, cat, box, crowd) in enumerate(anns)]}
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# image 1: a at (0,0), b at (20,20); image 2: a at (0,0)
HAND_GT = [(1, 1, (0, 0, 10, 10), 0), (1, 2, (20, 20, 10, 10), 0), (2, 1, (0, 0, 10, 10), 0)]
HAND_DETS = np.array([
    [1, 0, 0, 10, 10, 0.9, 1],      # a on a: TP
    [1, 20, 20, 10, 10, 0.8, 1],    # a on b: FP for a; confused b -> a in the matrix
    [2, 0, 0, 10, 10, 0.3, 1],      # a on a: TP
    [2, 50, 50, 10, 10, 0.6, 2],    # b on nothing: FP; background row
    [1, 20, 20, 10, 10, 0.2, 2],    # b on b: TP (below the matrix's 0.25)
    [2, 60, 60, 10, 10, 0.1, 1],    # a on nothing: FP at the lowest score
])


@pytest.fixture(scope="module")
def hand():
    gt = _coco([1, 2], HAND_GT)
    return gt, coco_eval.score(gt, HAND_DETS, [1, 2])


def test_operating_confidence_and_pr_by_hand(hand):
    _, result = hand
    st = result.classes
    # mean F1 over (a, b): 0.667 for conf <= 0.1 (a: P 2/4, R 1; b: P 1/2, R 1), 0.733 for
    # 0.1 < conf <= 0.2 (a: P 2/3, R 1), 0.4 above 0.2 (b loses its TP): the first grid point
    # above 0.1 is 100/999
    assert st.conf == pytest.approx(100 / 999)
    np.testing.assert_allclose(st.precision, [2 / 3, 1 / 2])
    np.testing.assert_allclose(st.recall, [1.0, 1.0])
    np.testing.assert_array_equal(st.images, [2, 1])
    np.testing.assert_array_equal(st.instances, [2, 1])
    all_row = st.rows()[0]
    assert all_row[:3] == ("all", 2, 3)
    assert all_row[3] == pytest.approx((2 / 3 + 1 / 2) / 2) and all_row[4] == pytest.approx(1.0)
    # F1 curve at 0.5: a has (.9 TP, .8 FP) -> P .5 R .5 -> F1 .5; b has nothing -> 0
    at = int(np.searchsorted(st.curves["conf"], 0.5))
    np.testing.assert_allclose(st.curves["F1"][:, at], [0.5, 0.0])


def test_f1_where_precision_plus_recall_is_below_one():
    """F1 = 2PR / (P + R) also where P + R < 1 (a guard against dividing by 0 that clamped the
    denominator to 1 halved it here and could move the operating confidence)."""
    # 4 boxes of a in 4 images, 4 detections: one hit (0.9), three misses elsewhere -> P 1/4, R 1/4
    gt = _coco([1, 2, 3, 4], [(i, 1, (0, 0, 10, 10), 0) for i in (1, 2, 3, 4)], names=("a",))
    dets = np.array([[1, 0, 0, 10, 10, 0.9, 1]] + [[i, 50, 50, 10, 10, 0.8, 1] for i in (2, 3, 4)])
    st = coco_eval.score(gt, dets, [1, 2, 3, 4]).classes
    at = int(np.searchsorted(st.curves["conf"], 0.5))     # every detection counts below 0.8
    assert st.curves["P"][0, at] == pytest.approx(0.25) and st.curves["R"][0, at] == pytest.approx(0.25)
    assert st.curves["F1"][0, at] == pytest.approx(0.25)
    high = int(np.searchsorted(st.curves["conf"], 0.85))  # only the hit: P 1, R 1/4, F1 0.4
    assert st.curves["F1"][0, high] == pytest.approx(0.4)
    assert st.conf > 0.8       # the operating confidence is where F1 is 0.4, not at 0.25 or below


def test_class_ap_is_the_coco_evaluation_s(hand):
    gt, result = hand
    st = result.classes
    # a: .9 TP, .8 FP, .3 TP over 2 boxes -> interpolated precision 1 up to recall .5, 2/3 after:
    # (51 * 1 + 50 * 2/3) / 101 on COCO's 101 recall points
    assert st.ap50[0] == pytest.approx((51 + 50 * 2 / 3) / 101)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = COCOeval(gt, gt.loadRes(HAND_DETS), "bbox")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    p = ref.eval["precision"][:, :, :, 0, -1]
    for k in range(2):
        assert st.ap50_95[k] == pytest.approx(p[:, :, k][p[:, :, k] > -1].mean(), abs=1e-12)
        assert st.ap50[k] == pytest.approx(p[0, :, k][p[0, :, k] > -1].mean(), abs=1e-12)
    assert st.all_ap50 == pytest.approx(ref.stats[1]) and st.all_ap50_95 == pytest.approx(ref.stats[0])


def test_confusion_matrix_and_per_image_errors_by_hand(hand):
    _, result = hand
    st = result.classes
    # rows true (a, b, background), columns predicted (a, b, background); score > 0.25 only
    np.testing.assert_array_equal(st.confusion, [[2, 0, 0], [1, 0, 0], [0, 1, 0]])
    # at conf 0.1001: image 1 has d1, d5 TP and d2 FP; image 2 has d3 TP, d4 FP (d6 below)
    assert st.per_image == {1: (2, 1, 0), 2: (1, 1, 0)}
    assert st.confusion_csv().splitlines()[1:] == ["a,2,0,0", "b,1,0,0", "background,0,1,0"]


def test_missed_object_is_a_false_negative_and_a_background_column_count():
    gt = _coco([1], [(1, 1, (0, 0, 10, 10), 0), (1, 2, (40, 40, 10, 10), 0)])
    st = coco_eval.score(gt, np.array([[1, 0, 0, 10, 10, 0.9, 1]]), [1]).classes
    np.testing.assert_array_equal(st.confusion, [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    assert st.per_image == {1: (1, 0, 1)}
    np.testing.assert_allclose(st.recall, [1.0, 0.0])


def _random_case(seed):
    rng = np.random.default_rng(seed)
    images = list(range(1, 60, 3))
    anns = []
    for img in images:
        for _ in range(rng.integers(0, 8)):
            x, y = rng.uniform(0, 70, 2)
            w, h = rng.uniform(5, 30, 2)
            anns.append((img, int(rng.integers(1, 4)), (x, y, w, h), int(rng.random() < 0.1)))
    rows = []
    for img, cat, box, _ in anns:
        for _ in range(rng.integers(0, 3)):
            x, y, w, h = np.array(box) + rng.normal(0, 2.5, 4)
            rows.append([img, x, y, max(w, 1), max(h, 1), round(rng.uniform(0, 1), 2),
                         cat if rng.random() < 0.8 else int(rng.integers(1, 4))])
    for img in images:
        for _ in range(rng.integers(0, 4)):
            rows.append([img, *rng.uniform(0, 70, 2), *rng.uniform(5, 30, 2), round(rng.uniform(0, 1), 2),
                         int(rng.integers(1, 4))])
    return _coco(images, anns, names=("a", "b", "c")), np.array(rows), images


@pytest.mark.parametrize("seed", range(4))
def test_matching_is_pycocotools_own(seed):
    """Every detection TP / FP / ignored (on a crowd box) exactly as pycocotools' evalImgs at
    IoU 0.50, area all (rounded scores make ties; crowd boxes are 10%)."""
    gt, rows, images = _random_case(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = COCOeval(gt, gt.loadRes(rows), "bbox")
        ref.evaluate()
    want = {cs.TP: set(), cs.FP: set(), cs.IGNORED: set()}
    for ev in ref.evalImgs:
        if ev is None or ev["aRng"] != [0, 1e10]:
            continue
        for d, m, ignored in zip(ev["dtIds"], ev["dtMatches"][0], ev["dtIgnore"][0]):
            want[cs.IGNORED if ignored else cs.TP if m > 0 else cs.FP].add(d - 1)
    dets = cs.detections(rows, images, [1, 2, 3])
    state, _ = cs.match(dets, cs.ground_truth(gt, images, [1, 2, 3]), 3)
    assert len(want[cs.IGNORED]) > 0 and len(want[cs.TP]) > 20
    for kind, ids in want.items():
        assert set(np.flatnonzero(state == kind)) == ids


def test_at_most_100_detections_per_image_and_class_are_counted():
    gt = _coco([1], [(1, 1, (0, 0, 10, 10), 0)])
    rows = np.array([[1, 50, 50, 5, 5, 0.9 - i * 1e-3, 1] for i in range(100)]
                    + [[1, 0, 0, 10, 10, 0.5, 1]])
    dets = cs.detections(rows, [1], [1, 2])
    state, gt_score = cs.match(dets, cs.ground_truth(gt, [1], [1, 2]), 2)
    assert state[-1] == cs.UNCOUNTED and (state[:100] == cs.FP).all() and gt_score[0] == -np.inf


def test_no_detections_and_a_class_without_ground_truth_still_report():
    gt = _coco([1, 2], [(1, 1, (0, 0, 10, 10), 0)])
    result = coco_eval.score(gt, np.zeros((0, 7)), [1, 2])
    st = result.classes
    assert result.ap50 == 0 and st is not None
    assert st.rows()[1][1:] == (1, 1, 0.0, 0.0, 0.0, 0.0)
    assert np.isnan(st.rows()[2][3])                         # b: no ground truth, no P
    cells = [c.strip() for c in st.table().splitlines()[-1].split("|")[1:-1]]
    assert cells == ["b", "0", "0", "-", "-", "-", "-"]
