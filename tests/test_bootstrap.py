"""detcore.evaluation.bootstrap: one matching pass per run, AP under image weights, and the paired
bootstrap of the difference between two runs.

The data are generated here (seeded): a few classes, crowd boxes, a box whose area is outside
COCO's range, an annotation with id 0, images without ground truth, images without detections
and one image with more than 100 detections of a class. pycocotools' COCOeval is the reference
for every number that it computes itself."""
import contextlib
import copy
import io
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.evaluation import bootstrap as bs
from detcore.evaluation import coco_eval
from detcore.evaluation.matches import match_run

ROOT = Path(__file__).resolve().parents[1]


def _coco(images, anns, n_classes):
    """A pycocotools index built in memory."""
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": 200, "height": 200} for i in images], "annotations": anns,
                    "categories": [{"id": k, "name": f"c{k}"} for k in range(1, n_classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _box(rng, lo=10, hi=60):
    w, h = rng.uniform(lo, hi, 2)
    x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
    return [float(x), float(y), float(w), float(h)]


def _jitter(rng, box, sigma):
    x, y, w, h = box
    j = rng.normal(0, sigma, 4) * [w, h, w, h]
    return [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]


def _data(seed, n_images=50, n_classes=4, zero_id=True, gt_classes=None, odd_areas=True):
    """(COCO, detection dicts) with every case the module docstring lists. Scores are continuous
    except the first detection's in every third image, 0.5 (never two equal in one image). Images
    7, 14, ... have no ground truth, 11, 22, ... no detections. ``gt_classes``: ground truth of the
    first so many classes only (default all); ``odd_areas`` False: no box or detection with an area
    outside [0, 1e10]; ``zero_id`` False: no annotation id 0."""
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for i in range(1, n_images + 1):
        for _ in range(0 if i % 7 == 0 else rng.integers(0, 6)):
            box, cat = _box(rng), int(rng.integers(1, (gt_classes or n_classes) + 1))
            odd = rng.random() < 0.04 and odd_areas
            area = -1.0 if odd else box[2] * box[3]          # outside [0, 1e10]: ignored
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box,
                         "area": area, "iscrowd": int(rng.random() < 0.1)})
            if i % 11:
                label = cat if rng.random() > 0.1 else int(rng.integers(1, n_classes + 1))
                dets += [{"image_id": i, "category_id": label, "bbox": _jitter(rng, box, 0.12),
                          "score": float(rng.random())} for _ in range(rng.integers(0, 3))]
        if i % 11:
            dets += [{"image_id": i, "category_id": int(rng.integers(1, n_classes + 1)), "bbox": _box(rng, 5, 80),
                      "score": float(rng.random())} for _ in range(rng.integers(0, 5))]
    dets += [{"image_id": 1, "category_id": 1, "bbox": _box(rng, 5, 80), "score": float(rng.random())}
             for _ in range(130)]                          # past COCOeval's 100 per image and class
    # a crowd box around an ordinary one: the detection's IoU is higher with the crowd box, but the
    # ordinary box comes first
    anns += [{"id": len(anns) + 1 + j, "image_id": 2, "category_id": 1, "bbox": box, "area": box[2] * box[3],
              "iscrowd": crowd} for j, (box, crowd) in enumerate((([20, 20, 120, 120], 1), ([40, 40, 40, 40], 0)))]
    dets.append({"image_id": 2, "category_id": 1, "bbox": [42, 42, 40, 40], "score": float(rng.random())})
    # two equal boxes: the first detection takes the later one (equal IoU), the second the earlier,
    # whose id 0 makes it a false positive in COCOeval's reading
    anns += [{"id": box_id, "image_id": 5, "category_id": 1, "bbox": [100, 100, 30, 30], "area": 900, "iscrowd": 0}
             for box_id in (0 if zero_id else len(anns) + 1, len(anns) + 2)]
    dets += [{"image_id": 5, "category_id": 1, "bbox": [101, 101, 30, 30], "score": score} for score in (0.95, 0.05)]
    if odd_areas:                          # areas outside [0, 1e10]: ignored when unmatched
        dets += [{"image_id": 3, "category_id": 2, "bbox": [10, 10, -5, 20], "score": float(rng.random())},
                 {"image_id": 4, "category_id": 2, "bbox": [0, 0, 1e6, 1e5], "score": float(rng.random())}]
    firsts = {}
    for d in dets:
        firsts.setdefault(d["image_id"], d)
    for img, d in firsts.items():          # equal scores in different images: COCOeval's order decides
        d["score"] = 0.5 if img % 3 == 0 else d["score"]
    return _coco(range(1, n_images + 1), anns, n_classes), dets


def _cocoeval(coco, dets, img_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _reference_ap(ev):
    """[T, K] COCOeval's AP per threshold and class (-1 where absent), from its precision array."""
    p = ev.eval["precision"][:, :, :, 0, 2]
    return np.where((p > -1).all(axis=1), p.mean(axis=1), -1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_evaluation_equals_cocoeval(seed):
    """All weights 1 gives COCOeval's precision array, per-class AP at every threshold and the
    summary's AP50:95 / AP50. Catches any departure from its rules: the matching order, crowd and
    ignored boxes, the id-0 quirk, the 100-per-image cut, the envelope or the recall sampling."""
    coco, dets = _data(seed)
    ids = coco.getImgIds()
    ev = _cocoeval(coco, dets, ids)
    m = match_run(coco, dets, ids)
    curves = bs.scores(m, curves=True)["AP"][0]
    np.testing.assert_allclose(curves, ev.eval["precision"][:, :, :, 0, 2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bs.average_precision(m)[0], _reference_ap(ev), rtol=0, atol=1e-12)
    table = bs.metrics(m)
    assert table["AP50_95"][0, 0] == pytest.approx(ev.stats[0], abs=1e-12)
    assert table["AP50"][0, 0] == pytest.approx(ev.stats[1], abs=1e-12)


def test_matching_reads_rows_arrays_and_a_subset_of_images():
    """Rows ``[N, 7]`` (the evaluators' form) match as the dicts do, and ``img_ids`` restricts the
    evaluation as COCOeval's ``params.imgIds`` does. Catches a column mix-up or detections of
    images outside the set leaking in."""
    coco, dets = _data(3)
    rows = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets])
    subset = list(range(5, 41, 2))
    m_rows, m_dicts = match_run(coco, rows, subset), match_run(coco, dets, subset)
    np.testing.assert_array_equal(m_rows.tp, m_dicts.tp)
    np.testing.assert_array_equal(bs.average_precision(m_rows), bs.average_precision(m_dicts))
    np.testing.assert_allclose(bs.average_precision(m_rows)[0], _reference_ap(_cocoeval(coco, dets, subset)),
                               rtol=0, atol=1e-12)


def _copied(coco, dets, img_ids, counts, n_classes):
    """The data set of a resample: each drawn image copied, its ground truth and detections with
    it, under a new image id (COCOeval would count a repeated id once)."""
    by_image = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    images, anns, rows = [], [], []
    for img, k in zip(img_ids, counts):
        for _ in range(k):
            images.append(len(images) + 1)
            anns += [{**a, "id": len(anns) + j + 1, "image_id": images[-1]}
                     for j, a in enumerate(coco.imgToAnns.get(img, []))]
            rows += [{**d, "image_id": images[-1]} for d in by_image.get(img, [])]
    return _coco(images, anns, n_classes), rows


def test_resampled_evaluation_equals_cocoeval_on_the_copied_images():
    """A resample's AP equals COCOeval on the data set of the drawn images, each copy its own
    image. Catches a weight applied to the wrong image, to the detections but not the ground
    truth (or back), or a weighted cumulative count that differs from repeating the images."""
    coco, dets = _data(4, zero_id=False)        # copies renumber annotations: no id 0 here
    ids = sorted(coco.getImgIds())
    m = match_run(coco, dets, ids)
    W = bs.resample_weights(np.random.default_rng(5), len(ids), 4)
    curves = bs.scores(m, W, curves=True)["AP"]
    table = bs.metrics(m, W)
    for b in range(len(W)):
        copy_gt, copy_rows = _copied(coco, dets, ids, W[b], 4)
        ev = _cocoeval(copy_gt, copy_rows, copy_gt.getImgIds())
        np.testing.assert_allclose(curves[b], ev.eval["precision"][:, :, :, 0, 2], rtol=0, atol=1e-12)
        assert table["AP50_95"][b, 0] == pytest.approx(ev.stats[0], abs=1e-12)
        assert table["AP50"][b, 0] == pytest.approx(ev.stats[1], abs=1e-12)


def test_precision_recall_at_a_confidence_is_the_per_class_tables():
    """With all weights 1, P and R per class at a confidence equal those of ``class_stats`` (the
    per-class table of every evaluation) at its operating confidence. Catches the comparison
    reporting P and R that count other detections than the run's own table. (Without annotation
    id 0 and areas outside [0, 1e10]: ``class_stats`` counts those boxes as ordinary ones, where
    COCOeval does not.)"""
    coco, dets = _data(6, zero_id=False, odd_areas=False)
    rows = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets])
    stats = coco_eval.score(coco, rows).classes
    P, R = bs.precision_recall(match_run(coco, rows), stats.conf)
    np.testing.assert_allclose(P[0], np.where(stats.valid, stats.precision, np.nan), atol=1e-12)
    np.testing.assert_allclose(R[0], np.where(stats.valid, stats.recall, np.nan), atol=1e-12)


def test_operating_confidence_by_hand():
    """One class, ten boxes in ten images; detections by score: TP 0.9, FP 0.8, TP 0.7, FP 0.5,
    FP 0.4. F1 is 0.182, 0.167, 0.308, 0.286, 0.267 above each score, so the best confidence is
    the first grid point above 0.5 (500/999). Catches an F1 of 2PR / max(P + R, 1), which would
    pick 0.9's step (P + R is below 1 everywhere else), or a confidence taken past a detection."""
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}
            for i in range(1, 11)]
    coco = _coco(range(1, 11), anns, 1)
    hit, miss = [10, 10, 50, 50], [120, 120, 50, 50]
    dets = [{"image_id": i, "category_id": 1, "bbox": box, "score": score}
            for i, box, score in ((1, hit, 0.9), (2, miss, 0.8), (3, hit, 0.7), (4, miss, 0.5), (5, miss, 0.4))]
    m = match_run(coco, dets)
    assert bs.best_conf(m) == pytest.approx(500 / 999)
    P, R = bs.precision_recall(m, bs.best_conf(m))
    np.testing.assert_allclose([P[0, 0], R[0, 0]], [2 / 3, 0.2])


def test_a_run_against_itself_differs_by_exactly_zero():
    """Every difference, bootstrap difference and interval bound is exactly 0 and nothing is
    significant. Catches resamples drawn apart for the two runs (not paired) or any asymmetry."""
    coco, dets = _data(7)
    result = bs.compare(coco, dets, copy.deepcopy(dets), coco.getImgIds(), resamples=50, seed=1)
    for metric in bs.METRICS:
        valid = np.isfinite(result.a[metric])
        assert valid[0] and valid.sum() > 2
        assert (result.diff[metric][valid] == 0).all()
        assert (result.boot[metric][np.isfinite(result.boot[metric])] == 0).all()
        assert (result.low[metric][valid] == 0).all() and (result.high[metric][valid] == 0).all()
        assert not result.significant[metric].any()


def test_seeded_and_independent_of_the_block_size():
    """The same seed gives the same intervals whether the resamples are scored 7 or 40 at a time.
    Catches a generator drawn per block (results would depend on memory) or a block boundary
    dropping or repeating resamples."""
    coco, dets = _data(8)
    _, other = _data(9)
    ids = coco.getImgIds()
    one = bs.compare(coco, dets, other, ids, resamples=40, seed=3, block=7)
    two = bs.compare(coco, dets, other, ids, resamples=40, seed=3, block=40)
    for metric in bs.METRICS:
        np.testing.assert_array_equal(one.boot[metric], two.boot[metric])
        np.testing.assert_array_equal(one.low[metric], two.low[metric])


def _population(rng, n_images, n_classes=3):
    """Ground truth for ``n_images`` and two runs as rows [N, 7]: B finds more of the boxes (85%
    vs 80%) with tighter boxes, both add false positives at lower scores."""
    anns = []
    for i in range(1, n_images + 1):
        for _ in range(rng.integers(0, 4)):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, n_classes + 1)),
                         "bbox": _box(rng), "area": 1.0, "iscrowd": 0})

    def run(found, sigma):
        rows = [[a["image_id"], *_jitter(rng, a["bbox"], sigma), rng.uniform(0.2, 1.0), a["category_id"]]
                for a in anns if rng.random() < found]
        for i in range(1, n_images + 1):
            rows += [[i, *_box(rng), rng.uniform(0.0, 0.7), int(rng.integers(1, n_classes + 1))]
                     for _ in range(rng.integers(0, 3))]
        return np.array(rows)
    return _coco(range(1, n_images + 1), anns, n_classes), run(0.80, 0.10), run(0.85, 0.08)


def test_interval_covers_the_true_difference():
    """95% intervals from validation sets of 150 images drawn from a population of 3,000 cover
    the population's difference (B - A of AP50:95 and AP50 over all classes) in >= 90% of 200
    simulations. Catches intervals that are too narrow (resamples not independent, too few
    images drawn per resample, a spread taken from one run only) or centred wrongly.

    200 resamples per simulation (not 1000) keep the test fast: the 2.5% and 97.5% points of 200
    draws move the coverage by about a point, well inside the 5-point margin to the 90% bound.
    """
    rng = np.random.default_rng(11)
    gt, rows_a, rows_b = _population(rng, 3000)
    truth_a, truth_b = bs.metrics(match_run(gt, rows_a)), bs.metrics(match_run(gt, rows_b))
    ids = np.asarray(gt.getImgIds())
    covered = {"AP50_95": 0, "AP50": 0}
    sims = 200
    for s in range(sims):
        subset = rng.choice(ids, 150, replace=False)
        result = bs.compare(gt, rows_a, rows_b, subset, resamples=200, seed=s)
        for metric in covered:
            true = truth_b[metric][0, 0] - truth_a[metric][0, 0]
            covered[metric] += result.low[metric][0] <= true <= result.high[metric][0]
    assert min(covered.values()) >= 0.90 * sims, covered


def test_csv_table_and_plot(tmp_path, log_lines):
    """The csv has one row per (class, metric), "all" first, with the issue's columns; the PNG is
    written (or, without matplotlib, one warning line). Catches a renamed column, a missing class
    or a plot that fails on classes without ground truth (c5 has none here)."""
    coco, dets = _data(10, n_classes=5, gt_classes=4)
    _, other = _data(12, n_classes=5, gt_classes=4)
    result = bs.compare(coco, dets, other, coco.getImgIds(), resamples=30, seed=0)
    path = bs.write_csv(result, tmp_path / "compare.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "class,metric,run A,run B,difference,ci_low,ci_high,significant"
    assert len(lines) == 1 + 6 * len(bs.METRICS)
    assert [line.split(",")[:2] for line in lines[1:5]] == [["all", m] for m in bs.METRICS]
    assert {line.split(",")[0] for line in lines[1:]} == {"all", "c1", "c2", "c3", "c4", "c5"}
    assert all(line.split(",")[-1] in ("True", "False") for line in lines[1:])
    png = bs.plot(result, tmp_path / "compare.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert png is None
        assert sum("matplotlib is not installed" in line for line in log_lines) == 1
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imports_neither_torch_nor_matplotlib():
    """The comparison runs where only numpy and pycocotools are installed (the CLI may run on a
    machine without torch), and matplotlib loads only when a plot is drawn. Catches an import
    of a torch-side module (``accel``'s device layer, ``detcore.training``) creeping in."""
    code = ("import sys; import detcore.evaluation.bootstrap; "
            "print(sorted({'torch', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
