"""Drawing of detkit's diagnostics: the confusion matrix, the precision-recall curve and the
F1 / precision / recall against confidence curves of one evaluation (``detcore.evaluation.class_stats``).
Computing lives in class_stats; this module only draws (the data set's labels plot is
``detcore.data.labels_plot``).

matplotlib is imported on first use with the Agg backend (no display needed), and every PNG is
written atomically, so a crash mid-write never leaves half an image behind.
"""
import numpy as np

from detcore.files import pyplot, save_png

PLOT_NAMES = {"confusion": "confusion_matrix.png", "pr": "PR_curve.png", "F1": "F1_curve.png",
              "P": "P_curve.png", "R": "R_curve.png"}


def _save(fig, path):
    return save_png(fig, path, dpi=110)


def _legend(ax, **kwargs):
    """A legend only when something is labelled: a split without ground truth has no class
    curves, and matplotlib's "No artists with labels" warning would reach the console."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _short(name, n=14):
    return name if len(name) <= n else name[:n - 1] + "~"


def plot_confusion(stats, path):
    """Counts and row-normalised (each true class sums to 1) side by side; rows true class,
    columns predicted, the last row and column background; thresholds in the title."""
    plt = pyplot()
    cm = np.asarray(stats.confusion, np.float64)
    labels = [_short(n) for n in stats.names] + ["background"]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(labels)
    size = min(max(6.0, 0.45 * k + 3), 30)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for ax, data, title, fmt in ((axes[0], cm, "counts", "{:.0f}"),
                                 (axes[1], norm, "row-normalised (per true class)", "{:.2f}")):
        shown = np.where(data > 0, data, np.nan)
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(np.nanmax(shown), 1e-9)
                       if np.isfinite(shown).any() else 1)
        ax.set_xticks(range(k), labels, rotation=90 if k > 8 else 45, ha="right" if k <= 8 else "center")
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if k <= 30:
            top = np.nanmax(shown) if np.isfinite(shown).any() else 1
            for (i, j), v in np.ndenumerate(data):
                if v > 0:
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                            color="white" if v > 0.6 * top else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"confusion matrix: detections with score > {stats.confusion_conf:g}, "
                 f"class-agnostic IoU > {stats.confusion_iou:g}\nbackground row: detections that "
                 "matched nothing; background column: objects nothing detected")
    fig.tight_layout()
    return _save(fig, path)


def plot_pr(stats, path):
    """COCO's interpolated precision against recall at IoU 0.50: each class thin, the mean over
    classes thick; the legend's mAP@0.5 is the evaluation's AP50."""
    plt = pyplot()
    recall, pr = stats.curves["recall"], stats.curves["pr"]
    fig, ax = plt.subplots(figsize=(8, 6))
    valid = stats.valid
    few = valid.sum() <= 20
    for k in np.flatnonzero(valid):
        ax.plot(recall, pr[k], linewidth=1, alpha=0.8 if few else 0.4,
                label=f"{_short(stats.names[k])} {stats.ap50[k]:.3f}" if few else None)
    if valid.any():
        ax.plot(recall, pr[valid].mean(axis=0), linewidth=3, color="blue",
                label=f"all classes mAP@0.5 {stats.all_ap50:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
           title="precision-recall (IoU 0.50, COCO interpolation)")
    ax.grid(alpha=0.3)
    _legend(ax, loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_conf_curve(stats, which, path):
    """``which`` ("F1", "P" or "R") against confidence: each class thin, the mean thick, the
    operating confidence (max mean F1) marked."""
    plt = pyplot()
    ylabel = {"F1": "F1", "P": "precision", "R": "recall"}[which]
    conf, curves = stats.curves["conf"], stats.curves[which]
    valid = stats.valid
    few = valid.sum() <= 20
    fig, ax = plt.subplots(figsize=(8, 6))
    for k in np.flatnonzero(valid):
        ax.plot(conf, curves[k], linewidth=1, alpha=0.8 if few else 0.4,
                label=_short(stats.names[k]) if few else None)
    if valid.any():
        mean = curves[valid].mean(axis=0)
        at = int(np.argmin(np.abs(conf - stats.conf)))
        ax.plot(conf, mean, linewidth=3, color="blue",
                label=f"all classes {mean[at]:.2f} at {stats.conf:.3f}")
        ax.axvline(stats.conf, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="confidence", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01),
           title=f"{ylabel} against confidence (IoU 0.50); dashed: max mean F1")
    ax.grid(alpha=0.3)
    _legend(ax, loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_evaluation(stats, folder):
    """Every plot of one evaluation into ``folder``; returns the paths written."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [plot_confusion(stats, folder / PLOT_NAMES["confusion"]),
             plot_pr(stats, folder / PLOT_NAMES["pr"])]
    for which in ("F1", "P", "R"):
        paths.append(plot_conf_curve(stats, which, folder / PLOT_NAMES[which]))
    return paths
