"""tools/compare.py: run folders in, the paired-bootstrap table, csv and png out (the statistics
themselves: tests/test_bootstrap.py)."""
import csv
import subprocess
import sys

import numpy as np
import pytest

from accel.errors import UserError
from detcore.data.layout import open_sources
from detcore.evaluation import compare_cli
from detcore.evaluation.report import DETECTIONS_NAME, read_detections, write_detections
from yolox_tools import ROOT


def gt_rows(data, keep, seed, shift=0.0):
    """Detection rows from the val split's ground truth: a fraction ``keep`` of the boxes found
    (shifted by ``shift`` px), scores random; plus one false positive per image."""
    _, val = open_sources(data, train=False)
    rng = np.random.default_rng(seed)
    rows = []
    for ann in val.coco.dataset["annotations"]:
        if rng.random() < keep:
            x, y, w, h = ann["bbox"]
            rows.append([ann["image_id"], x + shift, y + shift, w, h, rng.uniform(0.3, 1.0), ann["category_id"]])
    for img in val.ids:
        rows.append([img, 1, 1, 8, 8, rng.uniform(0.0, 0.5), val.class_ids[0]])
    return np.asarray(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def runs(shapes_coco, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, keep, shift in (("good", 0.95, 0.0), ("worse", 0.5, 3.0)):
        write_detections(gt_rows(shapes_coco, keep, 1, shift), root / name / DETECTIONS_NAME)
    return root


def test_detections_file_round_trip(tmp_path):
    rows = np.arange(21, dtype=np.float64).reshape(3, 7) + 0.125
    np.testing.assert_array_equal(read_detections(write_detections(rows, tmp_path / "d.npy")), rows)
    np.save(tmp_path / "bad.npy", np.zeros((2, 5)))
    with pytest.raises(UserError, match=r"shape \(2, 5\); expected \[N, 7\]"):
        read_detections(tmp_path / "bad.npy", "RUN")


def test_cli_prints_the_table_and_writes_csv_and_png(runs, shapes_coco, tmp_path, capsys):
    out = tmp_path / "cmp"
    [result] = compare_cli.main([str(runs / "good"), str(runs / "worse"), "--data", str(shapes_coco),
                                 "--resamples", "200", "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert printed.startswith("B = worse vs A = good: 12 images, 200 paired resamples (seed 0), 95% intervals")
    # the worse run lost half its boxes and shifted the rest: clearly worse overall
    assert result.diff["AP50_95"][0] < 0 and result.significant["AP50_95"][0]
    assert result.high["AP50_95"][0] < 0
    all_line = next(line for line in printed.splitlines() if line.startswith("all "))
    assert f"{result.diff['AP50_95'][0]:+.3f}" in all_line and "*" in all_line
    with open(out / "compare_worse.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 * len(result.classes)
    assert table[1]["class"] == "all" and table[1]["metric"] == "AP50_95"
    assert float(table[1]["difference"]) == pytest.approx(result.diff["AP50_95"][0], rel=1e-5)
    assert (out / "compare_worse.png").stat().st_size > 10_000


def test_a_run_against_itself_is_zero_with_no_interval(runs, shapes_coco, tmp_path):
    [result] = compare_cli.main([str(runs / "good"), str(runs / "good"), "--data", str(shapes_coco),
                                 "--resamples", "50", "--output-dir", str(tmp_path)])
    for m in ("AP50", "AP50_95", "P", "R"):
        finite = np.isfinite(result.diff[m])
        assert np.all(result.diff[m][finite] == 0) and np.all(result.low[m][finite] == 0)
        assert np.all(result.high[m][finite] == 0) and not result.significant[m].any()
    assert (tmp_path / "compare_2-good.csv").is_file()      # equal labels are numbered


def test_bad_input_is_one_line(runs, shapes_coco, tmp_path):
    def run(*argv):
        done = subprocess.run([sys.executable, "tools/compare.py", *map(str, argv)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        return done.returncode, done.stderr.strip().splitlines()

    code, err = run(runs / "good", "--data", shapes_coco)
    assert code == 2 and err == ["error: compare.py: give at least two runs (the first is the baseline)"]
    code, err = run(runs / "good", tmp_path, "--data", shapes_coco)
    assert code == 2 and err == [f"error: {tmp_path}: no {DETECTIONS_NAME} (written by training at each new best "
                                 "evaluation; runs trained before it have none)"]
    code, err = run(runs / "good", "not-a-run", "--data", shapes_coco)
    assert code == 2 and err == ["error: not-a-run: neither a run folder nor an MLflow run id (32 hex digits)"]
    other = tmp_path / "other"
    write_detections(np.array([[999999, 0, 0, 5, 5, 0.9, 1]]), other / DETECTIONS_NAME)
    code, err = run(runs / "good", other, "--data", shapes_coco)
    assert code == 2 and len(err) == 1 and "1 detected image id(s) (e.g. 999999) are not in the val split" in err[0]
    code, err = run(runs / "good", runs / "worse", "--data", shapes_coco, "--resamples", 0)
    assert code == 2 and err == ["error: --resamples must be >= 1 (got 0)"]


def test_output_cut_off_by_head_ends_quietly(runs, shapes_coco, tmp_path):
    """``compare.py ... | head -1``: no BrokenPipeError traceback, the shell's SIGPIPE status."""
    cmd = (f"{sys.executable} tools/compare.py {runs / 'good'} {runs / 'worse'} --data {shapes_coco} "
           f"--resamples 20 --output-dir {tmp_path} | head -1; echo \"rc=${{PIPESTATUS[0]}}\" >&2")
    done = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("B = worse vs A = good") and len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1] == "rc=141"
