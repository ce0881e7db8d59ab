"""What an evaluation leaves in the run's folder besides the log, for both detectors:

- ``results_per_class.csv``: one row per class (and "all") per evaluation, beside results.csv;
- ``confusion_matrix.csv`` and the plots of ``detcore.evaluation.plots`` (at a final evaluation, or always
  for ``tools/eval.py``);
- ``best_detections.npy``: the detection rows of the run's best evaluation (``[N, 7]`` float64:
  image id, x, y, w, h, score, category id, as COCOeval scored them), what ``tools/compare.py``
  compares runs on;
- with ``--analyze K``: ``errors/`` holding the K images with the most errors drawn (ground truth
  and predictions, labelled TP / FP / FN) and ``errors/per_image.json`` with the counts of every
  image.

A report must never end a run or lose its checkpoint: every failure here is one warning line and
whatever could be written stays written. Only the main process writes.
"""
import json
import warnings
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import UserError
from detcore.files import format_row, pyplot, read_rows, replace_atomic, write_atomic, write_rows

PER_CLASS_CSV = "results_per_class.csv"
DETECTIONS_NAME = "best_detections.npy"
CONFUSION_CSV = "confusion_matrix.csv"
ERRORS_DIR = "errors"


def _warn(what, exc):
    logger.warning(f"{what} not written ({type(exc).__name__}: {exc}); training and its checkpoints "
                   "are not affected")


def pr_columns(result):
    """results.csv's precision / recall columns of an epoch: the "all" row's P and R at the
    operating confidence, and that confidence; blank on epochs without an evaluation."""
    classes = getattr(result, "classes", None)
    if classes is None:
        return {"P": "", "R": "", "conf": ""}
    return {"P": classes.mean(classes.precision), "R": classes.mean(classes.recall), "conf": classes.conf}


def write_per_class_csv(classes, folder, epoch=None):
    """Append this evaluation's per-class rows to ``results_per_class.csv``; rows of this epoch
    or later from an earlier attempt (a resumed run) are replaced."""
    path = Path(folder) / PER_CLASS_CSV
    new = classes.csv_rows(**({} if epoch is None else {"epoch": epoch}))
    return write_rows(path, read_rows(path, before_epoch=epoch) + [format_row(r) for r in new])


def no_ground_truth(result, split="val", where=None):
    """True, with one warning line, when the scored split holds no ground-truth box: COCOeval
    then reports every AP as -1, which alone reads like a broken score rather than an empty split."""
    classes = getattr(result, "classes", None)
    if classes is None or int(np.sum(classes.instances)) > 0:
        return False
    logger.warning(f"the {split} split{f' ({where})' if where else ''} has no ground-truth boxes: AP is "
                   "undefined (-1, as COCOeval reports it); every detection counts as a false positive")
    return True


def _guarded(what, write, folder):
    """Run ``write(folder, written)``, which appends each path it writes to ``written``; a failure
    is one warning naming ``what`` (see the module docstring). Returns what was written."""
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write(folder, written)
    except Exception as exc:      # noqa: BLE001 -- a report never ends a run
        _warn(what, exc)
    return written


def write_evaluation(result, folder, epoch=None, plots=True):
    """The per-class csv (always) and, with ``plots``, the confusion csv and every plot of one
    evaluation's ``CocoScore``; returns the paths written. Never raises."""
    classes = getattr(result, "classes", None)
    if classes is None:
        return []
    folder = Path(folder)
    written = _guarded(f"{folder / PER_CLASS_CSV}",
                       lambda f, out: out.append(write_per_class_csv(classes, f, epoch)), folder)
    return written + (write_plots(result, folder) if plots else [])


def write_detections(rows, path):
    """Detection rows ``[N, 7]`` as an ``.npy`` file, atomically; a failure is one warning."""
    path = Path(path)
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    _guarded(str(path), lambda f, out: write_atomic(path, lambda file: np.save(file, array)), path.parent)
    return path


def read_detections(path, flag="RUN"):
    """The rows ``write_detections`` wrote; a missing or foreign file is one line naming it."""
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag}: cannot read detections {path} ({exc})") from None
    if rows.ndim != 2 or rows.shape[1] != 7:
        raise UserError(f"{flag}: {path} holds an array of shape {rows.shape}; expected [N, 7] detection rows")
    return rows


def write_plots(result, folder):
    """``confusion_matrix.csv`` and every plot of one evaluation into ``folder`` (a run's final
    evaluation, or tools/eval.py); returns the paths written. Never raises."""
    classes = getattr(result, "classes", None)
    if classes is None:
        return []

    def write(f, written):
        replace_atomic(f / CONFUSION_CSV, classes.confusion_csv().encode())
        written.append(f / CONFUSION_CSV)
        from detcore.evaluation.plots import plot_evaluation

        if pyplot("evaluation plots") is not None:
            with warnings.catch_warnings(record=True) as caught:   # matplotlib's, not the user's concern
                warnings.simplefilter("always")
                written += plot_evaluation(classes, f)
            for w in caught:
                logger.debug(f"evaluation plots: {w.category.__name__}: {w.message}")

    return _guarded(f"evaluation plots in {folder}", write, Path(folder))


def analyze(result, coco_gt, rows, img_ids, source, k, folder):
    """``--analyze K``: the K images with the most errors (missed objects + false detections at
    the table's operating confidence) drawn into ``folder/errors``, and ``per_image.json`` with
    (tp, fp, fn) of every image, most errors first. Returns the json's path (None on failure)."""
    classes = getattr(result, "classes", None)
    if classes is None:
        logger.warning("--analyze: no per-class statistics to analyse")
        return None
    out = Path(folder) / ERRORS_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        ranked = sorted(classes.per_image.items(), key=lambda kv: (-(kv[1][1] + kv[1][2]), kv[0]))
        listing = [{"image_id": i, "file": str(source.file_name(i)), "tp": tp, "fp": fp, "fn": fn,
                    "errors": fp + fn} for i, (tp, fp, fn) in ranked]
        from detcore.evaluation import class_stats as cs

        cat_ids = sorted(coco_gt.getCatIds())
        gts = cs.ground_truth(coco_gt, img_ids, cat_ids)          # once, for every drawn image
        rows = np.asarray(rows, np.float64).reshape(-1, 7)
        for entry in listing[:k]:
            if entry["errors"] == 0:
                break
            entry["drawn"] = str(_draw_image(entry["image_id"], classes, gts, cat_ids, rows, img_ids,
                                             source, out))
        payload = {"confidence": classes.conf, "iou": 0.5, "images": listing}
        replace_atomic(out / "per_image.json", json.dumps(payload, indent=1).encode())
        drawn = sum("drawn" in e for e in listing)
        logger.info(f"--analyze: {drawn} image(s) with the most errors drawn into {out} "
                    f"(confidence {classes.conf:.3f}); per-image counts in {out / 'per_image.json'}")
        return out / "per_image.json"
    except Exception as exc:      # noqa: BLE001
        _warn(f"--analyze output in {out}", exc)
        return None


def _draw_image(img_id, classes, gts, cat_ids, rows, img_ids, source, out):
    """One image with its errors: the same matching as the table, restricted to this image
    (matching is per image and class, so the restriction changes nothing). ``gts``: every
    evaluated image's ground truth (``class_stats.ground_truth``)."""
    import cv2

    from detcore.evaluation import class_stats as cs
    from detcore.deploy.draw import draw_errors

    dets = cs.detections(rows[rows[:, 0] == img_id], img_ids, cat_ids)
    gts = gts.subset(gts.img == np.searchsorted(np.asarray(sorted(img_ids)), img_id))
    state, gt_score = cs.match(dets, gts, len(cat_ids))
    shown = (dets.score >= classes.conf) & ((state == cs.TP) | (state == cs.FP))
    img = cv2.imread(str(source.path(img_id)))
    if img is None:
        raise OSError(f"cannot read {source.path(img_id)}")
    plain = ~gts.crowd
    img = draw_errors(img, gts.xyxy[plain], gts.cls[plain], gt_score[plain] >= classes.conf,
                      dets.xyxy[shown], dets.cls[shown], dets.score[shown], state[shown] == cs.TP,
                      classes.names)
    path = out / f"{int(img_id)}_{Path(str(source.file_name(img_id))).stem}.jpg"
    ok, data = cv2.imencode(".jpg", img)
    if not ok:
        raise OSError(f"cannot encode {path}")
    replace_atomic(path, data.tobytes())
    return path
