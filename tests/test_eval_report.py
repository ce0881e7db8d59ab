"""detcore.evaluation.report: the per-class csv, confusion csv, plots and --analyze output of one
evaluation, on the generated shapes set with known detections; a failure is one warning."""
import csv
import json

import numpy as np
import pytest

from detcore.evaluation import coco_eval

from detcore.evaluation import report as eval_report
from detcore.data.coco import CocoSource


@pytest.fixture(scope="module")
def scored(shapes_coco):
    """The val split scored with detections: every box found except the first two of image 0's
    list and one confident false detection on each of the first three images."""
    source = CocoSource(shapes_coco / "annotations" / "instances_val2017.json", shapes_coco / "val2017")
    gt = source.coco
    anns = sorted(gt.dataset["annotations"], key=lambda a: a["id"])
    first_img = source.ids[0]
    dropped = [a["id"] for a in anns if a["image_id"] == first_img][:2]
    rows = [[a["image_id"], *a["bbox"], 0.9, a["category_id"]] for a in anns if a["id"] not in dropped]
    rows += [[i, 1, 1, 6, 6, 0.95, gt.getCatIds()[0]] for i in source.ids[:3]]   # above every TP
    rows = np.array(rows, np.float64)
    return source, gt, rows, coco_eval.score(gt, rows, source.ids), first_img


def test_csvs_and_plots_are_written(scored, tmp_path):
    source, gt, rows, result, _ = scored
    paths = eval_report.write_evaluation(result, tmp_path, epoch=3)
    names = {p.name for p in paths}
    assert {"results_per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "PR_curve.png",
            "F1_curve.png", "P_curve.png", "R_curve.png"} <= names
    for p in paths:
        assert p.stat().st_size > 0
    eval_report.write_evaluation(result, tmp_path, epoch=4, plots=False)
    eval_report.write_evaluation(result, tmp_path, epoch=4, plots=False)     # re-evaluated epoch 4
    with open(tmp_path / "results_per_class.csv", newline="") as f:
        table = list(csv.DictReader(f))
    k = len(gt.getCatIds())
    assert [r["epoch"] for r in table] == ["3"] * (k + 1) + ["4"] * (k + 1)
    assert table[0]["class"] == "all" and float(table[0]["R"]) < 1.0
    assert int(table[0]["instances"]) == len(gt.dataset["annotations"])


def test_analyze_draws_the_worst_images_and_counts_every_image(scored, tmp_path):
    source, gt, rows, result, first_img = scored
    out = eval_report.analyze(result, gt, rows, source.ids, source, 2, tmp_path)
    payload = json.loads(out.read_text())
    images = payload["images"]
    assert len(images) == len(source.ids)
    worst = images[0]
    # image 0: two missed boxes + one false detection
    assert (worst["image_id"], worst["fp"], worst["fn"]) == (first_img, 1, 2)
    assert [e["errors"] for e in images[1:3]] == [1, 1]
    assert sum(e["errors"] for e in images) == 2 + 3
    drawn = [e for e in images if "drawn" in e]
    assert len(drawn) == 2 and all((tmp_path / "errors" / e["drawn"].split("/")[-1]).is_file() for e in drawn)


def test_a_report_failure_is_one_warning_not_an_exception(scored, tmp_path, log_lines):
    _, _, _, result, _ = scored
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert eval_report.write_evaluation(result, blocker) == []
    assert any("not written" in line and "checkpoints are not affected" in line for line in log_lines)


def test_a_split_without_ground_truth_is_one_warning_and_no_library_warnings(shapes_coco, tmp_path, log_lines,
                                                                           recwarn):
    """tools/eval.py --analyze on a val split with no annotations: one warning line saying so (AP is
    -1 as COCOeval reports it), and none of matplotlib's "No artists with labels" warnings."""
    from types import SimpleNamespace

    from yolox.tools.eval import write_reports

    ann = tmp_path / "instances_val2017.json"
    data = json.loads((shapes_coco / "annotations" / "instances_val2017.json").read_text())
    ann.write_text(json.dumps({**data, "annotations": []}))
    source = CocoSource(ann, shapes_coco / "val2017")
    gt = source.coco
    rows = np.array([[i, 1, 1, 6, 6, 0.95, gt.getCatIds()[0]] for i in source.ids[:3]], np.float64)
    result = coco_eval.score(gt, rows, source.ids)
    assert result.ap50 == -1
    result.rows = rows                                   # as the evaluator keeps them for --analyze
    dataset = SimpleNamespace(coco=gt, ids=source.ids, source=source)
    evaluator = SimpleNamespace(last_result=result, dataloader=SimpleNamespace(dataset=dataset))
    write_reports(evaluator, tmp_path / "run", SimpleNamespace(plots=True, analyze=2, test=False))
    assert [str(w.message) for w in recwarn] == []
    said = [ln for ln in log_lines if "ground-truth" in ln]
    assert said == [f"the val split ({ann}) has no ground-truth boxes: AP is undefined (-1, as COCOeval "
                    "reports it); every detection counts as a false positive"]
    assert (tmp_path / "run" / "PR_curve.png").is_file() and (tmp_path / "run" / "errors" / "per_image.json").is_file()
