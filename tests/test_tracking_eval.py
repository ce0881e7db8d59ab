"""Tracking metrics through TrackEval (detcore.evaluation.tracking): hand-computed values on a
two-object scene, and MOTA / IDF1 cross-checked against motmetrics on the same files."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trackeval")
from detcore.evaluation import tracking as tr  # noqa: E402
from test_demo_video import nano  # noqa: E402,F401  (fixture: a 160-px YOLOX-nano that detects)


def two_objects(frames=20):
    """Object 1 moves right, object 2 left (class 2), one row per frame each, all considered."""
    rows = []
    for f in range(1, frames + 1):
        rows.append([f, 1, 10 + 3 * f, 20, 30, 40, 1, 1, 1.0])
        rows.append([f, 2, 200 - 3 * f, 60, 30, 40, 1, 2, 1.0])
    return np.array(rows, float)


def as_result(gt):
    return np.column_stack([gt[:, :6], np.ones(len(gt)), gt[:, 7]])


def test_perfect_tracks_score_one_and_an_id_switch_costs_what_the_formulas_say():
    gt = two_objects()
    assert tr.evaluate({"a": (gt, as_result(gt), 20)})["a"] == {
        "HOTA": 1.0, "DetA": 1.0, "AssA": 1.0, "MOTA": 1.0, "IDF1": 1.0, "IDSW": 0, "FP": 0, "FN": 0}
    res = as_result(gt)
    res[(res[:, 0] > 10) & (res[:, 1] == 1), 1] = 7        # object 1 gets a new id half-way
    s = tr.evaluate({"a": (gt, res, 20)})["a"]
    # IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN) = 60 / 80; MOTA = 1 - 1 switch / 40 objects;
    # AssA = (20 TPs at 1/2 + 20 at 1) / 40; HOTA = sqrt(DetA * AssA)
    assert (s["IDSW"], s["FP"], s["FN"]) == (1, 0, 0)
    assert s["IDF1"] == pytest.approx(0.75) and s["MOTA"] == pytest.approx(0.975)
    assert s["AssA"] == pytest.approx(0.75) and s["HOTA"] == pytest.approx(0.75 ** 0.5)


def test_misses_false_positives_ignore_regions_and_per_class():
    gt = two_objects()
    gt[(gt[:, 0] <= 5) & (gt[:, 1] == 2), 6] = 0            # object 2 is an ignore region for 5 frames
    res = as_result(gt)[gt[:, 0] > 2]                       # frames 1-2 not tracked at all
    extra = np.array([[4, 99, 400, 400, 20, 20, 1, 1]], float)
    s, per_class = tr.evaluate({"a": (gt, np.vstack([res, extra]), 20)}, by_class=True)
    # misses: object 1 in frames 1-2 (object 2's are ignored there); FP: the stray box
    assert (s["a"]["FN"], s["a"]["FP"]) == (2, 1)
    assert per_class[2]["FN"] == 0 and per_class[2]["FP"] == 0 and per_class[1]["FN"] == 2


def test_mota_and_idf1_equal_motmetrics_on_the_same_files(tmp_path, monkeypatch):
    mm = pytest.importorskip("motmetrics")
    if not hasattr(np, "asfarray"):        # motmetrics 1.4.0 (its last release) calls np.asfarray
        monkeypatch.setattr(np, "asfarray", lambda a, dtype=np.float64: np.asarray(a, dtype=dtype), raising=False)
    rng = np.random.default_rng(3)
    gt = two_objects(40)
    res = as_result(gt)
    res[:, 2:4] += rng.normal(0, 2.0, (len(res), 2))        # jittered boxes
    res = res[rng.random(len(res)) > 0.1]                    # 10% missed
    res[(res[:, 0] > 25) & (res[:, 1] == 2), 1] = 5           # one switch
    ours = tr.evaluate({"s": (gt, res, 40)})["s"]
    tr.write_mot_rows(tmp_path / "res.txt", res[:, 0], res[:, 1], res[:, 2:6], res[:, 6])
    np.savetxt(tmp_path / "gt.txt", gt, fmt="%d,%d,%.3f,%.3f,%.3f,%.3f,%d,%d,%.3f")
    gt_df = mm.io.loadtxt(str(tmp_path / "gt.txt"), fmt="mot15-2D", min_confidence=1)
    ts_df = mm.io.loadtxt(str(tmp_path / "res.txt"), fmt="mot15-2D")
    acc = mm.utils.compare_to_groundtruth(gt_df, ts_df, "iou", distth=0.5)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="s")
    assert ours["MOTA"] == pytest.approx(float(summary["mota"].iloc[0]), abs=1e-6)
    assert ours["IDF1"] == pytest.approx(float(summary["idf1"].iloc[0]), abs=1e-6)
    assert ours["IDSW"] == int(summary["num_switches"].iloc[0])


def test_a_malformed_result_line_is_one_line(tmp_path):
    bad = tmp_path / "SEQ.txt"
    bad.write_text("1,1,10,10,5,5,1,-1,-1,-1\n2,1,ten,10,5,5\n")
    with pytest.raises(Exception, match=r"SEQ\.txt:2: not a MOTChallenge line"):
        tr.read_mot_rows(bad)


def _public_dets_from_gt(root, score=0.9):
    """Write det/det.txt of every val sequence: its considered gt boxes, one score."""
    for seq in (root / "val").iterdir():
        gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",").reshape(-1, 9)
        gt = gt[gt[:, 6] == 1]
        n = len(gt)
        det = np.column_stack([gt[:, 0], -np.ones(n), gt[:, 2:6], np.full(n, score), -np.ones((n, 3))])
        (seq / "det").mkdir(exist_ok=True)
        np.savetxt(seq / "det" / "det.txt", det, fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%.3f,%d,%d,%d")


def test_eval_track_public_detections_writes_results_and_scores(tmp_path, capsys):
    from detcore.data.shapes import make_shapes
    from yolox.tools import eval_track

    root = make_shapes(tmp_path / "mot", 0, 0, seed=1, video=2, frames=20)
    _public_dets_from_gt(root)
    scores = eval_track.main(["-d", str(root), "--public-dets", "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "COMBINED" in out and "HOTA" in out
    seqs = sorted(p.name for p in (root / "val").iterdir())
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.txt")) == seqs
    rows = tr.read_mot_rows(tmp_path / "out" / f"{seqs[0]}.txt")
    assert len(rows) and rows[:, 0].min() >= 1 and rows[:, 0].max() <= 20
    # the gt boxes as detections (seed 1: measured HOTA 0.914, IDF1 0.971, 2 switches where the
    # two crossing shapes overlap): a tracker that loses or mixes up tracks falls far below
    combined = scores[tr.COMBINED]
    assert combined["HOTA"] > 0.85 and combined["IDF1"] > 0.9 and combined["IDSW"] <= 2
    table = (tmp_path / "out" / "track_eval.csv").read_text().splitlines()
    assert table[0].startswith("sequence,HOTA,DetA,AssA,MOTA,IDF1") and table[-1].startswith("COMBINED,")


def test_eval_track_without_public_detections_is_one_line(tmp_path):
    import subprocess
    import sys

    from detcore.data.shapes import make_shapes
    root = make_shapes(tmp_path / "mot", 0, 0, seed=1, video=1, frames=4)
    proc = subprocess.run([sys.executable, "tools/eval_track.py", "-d", str(root), "--public-dets",
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    lines = proc.stderr.strip().splitlines()
    want = "det/det.txt does not exist: shapes-01 has no public detections"
    assert proc.returncode == 2 and len(lines) == 1 and want in lines[0], proc.stderr


def test_eval_track_with_a_yolox_checkpoint_tracks_every_frame(tmp_path, capsys, nano):  # noqa: F811
    """-f/-c: the PyTorch detector path; every frame of every val sequence is tracked and scored
    (the 160-px nano detects, untrained: the numbers are not the point, the files and rows are)."""
    from detcore.data.shapes import make_shapes
    from yolox.tools import eval_track
    from yolox_tools import SHAPES_EXP

    ckpt, _ = nano
    root = make_shapes(tmp_path / "mot", 0, 0, seed=2, video=1, frames=6)
    scores = eval_track.main(["-d", str(root), "-f", SHAPES_EXP, "-c", str(ckpt), "--tsize", "160",
                              "--track-thresh", "0.2", "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "6 frames in" in out and "tracker" in out and set(scores) == {"shapes-01", tr.COMBINED}
    rows = tr.read_mot_rows(tmp_path / "out" / "shapes-01.txt")
    assert len(rows) > 0 and set(rows[:, 0]) <= set(range(1, 7))
