"""How well objects are followed: HOTA (with its detection and association parts DetA / AssA),
MOTA, IDF1, ID switches, false positives and misses, computed by TrackEval (the MOTChallenge
benchmark's own code, a dependency: ``pip install 'detkit[track]'``), never re-implemented here.

Files are MOTChallenge text: ground truth ``frame, id, x, y, w, h, consider, class, visibility``
and results ``frame, id, x, y, w, h, score, -1, -1, -1`` (1-based frames, boxes in pixels).
TrackEval's MOT17 protocol scores class 1 (pedestrian) and treats a few classes as distractors;
detkit's data sets have their own classes, so each evaluation is class-agnostic (every considered
ground-truth row becomes class 1; rows with ``consider`` 0 stay ignore regions, as in MOT17) and,
with ``by_class``, repeated per class on that class's rows alone.
"""
import configparser
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from accel.errors import UserError
from detcore.data.writers import mot_result_lines

METRICS = ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW", "FP", "FN")
COMBINED = "COMBINED"
_TRACKER = "detkit"


def _trackeval():
    try:
        import trackeval
    except ImportError:
        raise UserError("tracking evaluation needs TrackEval: pip install 'detkit[track]' "
                        "(or pip install trackeval)") from None
    return trackeval


def read_mot_rows(path, columns=10):
    """A MOTChallenge text file as a float64 array [N, columns] (a missing trailing column reads
    as -1); an empty file is [0, columns]. A malformed line is one UserError naming it."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.replace(" ", "").split(",")]
        except ValueError:
            raise UserError(f"{path}:{lineno}: not a MOTChallenge line (frame, id, x, y, w, h, ...): "
                            f"{line.strip()[:80]!r}") from None
        if len(values) < 6:
            raise UserError(f"{path}:{lineno}: expected at least 6 comma-separated numbers "
                            f"(frame, id, x, y, w, h), got {len(values)}")
        rows.append((values + [-1.0] * columns)[:columns])
    return np.asarray(rows, dtype=np.float64).reshape(-1, columns)


def write_mot_rows(path, frames, ids, boxes_xywh, scores=None):
    """Write tracks as a MOTChallenge result file (1-based ``frames``, ``boxes_xywh`` in pixels)."""
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    scores = np.ones(len(frames)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    lines = mot_result_lines(frames, np.asarray(ids).reshape(-1), np.asarray(boxes_xywh, np.float64).reshape(-1, 4),
                             scores)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(lines))
    return Path(path)


def _agnostic_gt(gt, cls=None):
    """Ground-truth rows as TrackEval's single class: considered rows (of class ``cls`` when
    given) -> class 1 (pedestrian); ignore rows (consider 0, of any class) -> class 8
    (distractor), so a track on an ignore region is neither a hit nor a false positive, as a
    COCO crowd box (TrackEval drops zero-marked pedestrians but counts tracks on them)."""
    gt = gt.copy()
    if cls is not None:
        gt = gt[(gt[:, 7] == cls) | (gt[:, 6] == 0)]
    gt[:, 7] = np.where(gt[:, 6] == 0, 8, 1)
    gt[:, 8] = np.where(gt[:, 8] < 0, 1.0, gt[:, 8])
    return gt


def _write_table(path, rows, gt):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = ",".join(["%d", "%d"] + ["%.3f"] * 4 + (["%d", "%d", "%.3f"] if gt else ["%.4f", "%d", "%d", "%d"]))
    np.savetxt(path, rows, fmt=fmt)


def evaluate(sequences, by_class=False):
    """``sequences``: {name: (gt rows [N, 9+], result rows [M, 7+], number of frames)}. Returns
    {name or COMBINED: {metric: value}} (HOTA/DetA/AssA as TrackEval's mean over its IoU
    thresholds, MOTA/IDF1 in [.., 1], IDSW/FP/FN counts) and, with ``by_class``, a second dict
    {class id: the same} over the classes the ground truth holds."""
    overall = _run({k: (_agnostic_gt(g), r, n) for k, (g, r, n) in sequences.items()})
    if not by_class:
        return overall
    classes = sorted({int(c) for g, _, _ in sequences.values() for c in np.unique(g[g[:, 6] != 0, 7])})
    per_class = {}
    for cls in classes:
        subset = {k: (_agnostic_gt(g, cls), r[r[:, 7] == cls] if r.shape[1] > 7 and (r[:, 7] >= 0).any() else r, n)
                  for k, (g, r, n) in sequences.items()}
        per_class[cls] = _run(subset)[COMBINED]
    return overall, per_class


def _run(sequences):
    trackeval = _trackeval()
    with tempfile.TemporaryDirectory(prefix="detkit_trackeval_") as tmp:
        gt_root, trackers = Path(tmp) / "gt", Path(tmp) / "trackers"
        for name, (gt, res, frames) in sequences.items():
            _write_table(gt_root / name / "gt" / "gt.txt", gt[:, :9], gt=True)
            ini = configparser.ConfigParser()
            ini["Sequence"] = {"name": name, "seqLength": str(int(frames))}
            with open(gt_root / name / "seqinfo.ini", "w") as f:
                ini.write(f)
            out = np.column_stack([res[:, :7], -np.ones((len(res), 3))]) if len(res) else np.zeros((0, 10))
            _write_table(trackers / _TRACKER / "data" / f"{name}.txt", out, gt=False)
        dataset_config = {"GT_FOLDER": str(gt_root), "TRACKERS_FOLDER": str(trackers),
                          "OUTPUT_FOLDER": str(Path(tmp) / "out"),
                          "TRACKERS_TO_EVAL": [_TRACKER], "CLASSES_TO_EVAL": ["pedestrian"], "SKIP_SPLIT_FOL": True,
                          "SEQ_INFO": {k: int(v[2]) for k, v in sequences.items()}, "PRINT_CONFIG": False}
        eval_config = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
                       "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False,
                       "DISPLAY_LESS_PROGRESS": True, "BREAK_ON_ERROR": True, "LOG_ON_ERROR": None}
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                   trackeval.metrics.Identity({"PRINT_CONFIG": False})]
        with contextlib.redirect_stdout(io.StringIO()):       # TrackEval prints its progress
            results, messages = trackeval.Evaluator(eval_config).evaluate(
                [trackeval.datasets.MotChallenge2DBox(dataset_config)], metrics)
    per_seq = results["MotChallenge2DBox"][_TRACKER]
    if not isinstance(per_seq, dict):
        raise UserError(f"TrackEval failed: {messages}")
    return {(COMBINED if name == "COMBINED_SEQ" else name): _summary(res["pedestrian"])
            for name, res in per_seq.items()}


def _summary(res):
    hota, clear, ident = res["HOTA"], res["CLEAR"], res["Identity"]
    return {"HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
            "AssA": float(np.mean(hota["AssA"])), "MOTA": float(clear["MOTA"]), "IDF1": float(ident["IDF1"]),
            "IDSW": int(clear["IDSW"]), "FP": int(clear["CLR_FP"]), "FN": int(clear["CLR_FN"])}


def format_table(scores):
    """The per-sequence table with the combined row last, as ``tools/eval_track.py`` prints it."""
    head = f"{'sequence':<20}" + "".join(f"{m:>8}" for m in METRICS)
    lines = [head]
    for name, s in sorted(scores.items(), key=lambda kv: (kv[0] == COMBINED, kv[0])):
        cells = "".join(f"{100 * s[m]:8.2f}" if m in ("HOTA", "DetA", "AssA", "MOTA", "IDF1") else f"{s[m]:8d}"
                        for m in METRICS)
        lines.append(f"{name:<20}{cells}")
    return "\n".join(lines)
