"""Is run B really better than run A? A paired bootstrap over the validation images.

Two runs scored on the same validation set differ by, say, 0.4 AP: is that the models, or which
images happen to be in the set? Drawing the images with replacement, scoring both runs on each
draw and reading the spread of the difference answers it. Drawing the *same* images for both runs
(paired) removes the variation they share (a hard image is hard for both), so the interval of the
difference is much narrower than two separate intervals would suggest.

Three steps, so that each run is matched once and the resamples only re-weigh the matches:

1. ``detcore.evaluation.matches.match_run``: one matching pass per run with COCOeval's rules,
   kept as flat arrays (``Matches``; that module says how, and where COCOeval's rules surprise).
2. ``average_precision`` / ``precision_recall``: AP per class and threshold, and P and R at IoU
   0.50, under an integer weight per image (how often a resample drew it): a detection of an
   image drawn k times counts k times, the image's ground truth too. All ones is the plain
   evaluation (``test_bootstrap`` checks it against pycocotools to 1e-12, and one weighting
   against COCOeval on the data set with the drawn images copied).
3. ``compare``: both runs on the full set, the difference B - A, and its percentile interval from
   a paired bootstrap over the images; ``write_csv`` and ``plot`` write the table and the figure.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from detcore.evaluation.class_stats import CONF_GRID
from detcore.evaluation.matches import IOU_THRS, MAX_DETS, REC_THRS, match_run
from detcore.files import format_row, pyplot, save_png, write_rows

EPS = np.spacing(1)
METRICS = ("AP50", "AP50_95", "P", "R")
MEMORY = 1 << 30       # bytes a block of resamples may take (the arrays of one class of one run)
CACHE = 3 << 20        # bytes of one class's weights per block that run fastest (``_block_size``)


# --------------------------------------------------------------------------------------------
# 1. scores under image weights


def _recall_counts(npig):
    """[B, R] the fewest true positives c with ``c / npig >= recThr`` in floating point, per
    resample's ground-truth count: COCOeval's ``searchsorted(tp / npig, recThrs, 'left')`` as a
    search over the integer cumulative counts, which the resamples can share (one search)."""
    n = np.maximum(npig, 1).astype(np.float64)[:, None]
    c = np.ceil(REC_THRS * n) - 1          # the rounding of the product is off by at most one
    for _ in range(2):
        c = np.where(c / n >= REC_THRS, c, c + 1)
    return np.maximum(c, 0).astype(np.int64)


def _first_at_least(cum, c):
    """[B, R] per row of the non-decreasing ``cum`` [B, n] the first column where it reaches
    ``c`` [B, R] (n where it never does): one searchsorted over all rows, each lifted above the
    previous one by an offset."""
    B, n = cum.shape
    big = int(cum[:, -1].max()) + 2
    lift = np.arange(B, dtype=np.int32 if B * big < 2 ** 31 else np.int64)[:, None] * big
    keys = (cum + lift).ravel()
    wanted = (np.minimum(c, big - 1) + lift).astype(keys.dtype)      # one dtype: no copy of ``keys``
    at = np.searchsorted(keys, wanted.ravel(), "left").reshape(c.shape)
    return at - np.arange(B)[:, None] * n


def _weight_before(G, pos, at):
    """[B, len(at)] the summed weights ``G`` [B, n] of the columns ``pos`` (sorted) that lie
    before each column of ``at`` (0 when ``pos`` is empty, the usual case for ignored ones)."""
    if not len(pos):
        return 0
    cum = np.zeros((G.shape[0], len(pos) + 1), G.dtype)
    np.cumsum(G[:, pos], axis=1, out=cum[:, 1:])
    return cum[:, np.searchsorted(pos, at, "left")]


def _interpolated(G, nd_all, tp, ignored, counts):
    """[B, R] COCOeval's interpolated precision at the 101 recall points at one threshold.

    Only the true positives' columns are needed: precision peaks at a true positive (it falls
    over the false positives after it), so the envelope from the right is the running maximum
    over true positives, and recall reaches each point at a true positive. A detection with
    weight k is its k copies at once: the copies' envelope is the last copy's, so nothing differs
    from scoring the copied data set (module docstring: equal scores).
    """
    pos = np.flatnonzero(tp)
    B = G.shape[0]
    if not len(pos):
        return np.zeros((B, len(REC_THRS)))
    tpc = np.cumsum(G[:, pos], axis=1, dtype=G.dtype)
    nd = nd_all[:, pos] - _weight_before(G, np.flatnonzero(ignored), pos)
    pr = tpc / (nd + EPS)                    # = tp / (fp + tp + eps): fp + tp is exact
    envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    at = _first_at_least(tpc, counts)
    q = np.take_along_axis(envelope, np.minimum(at, len(pos) - 1), axis=1)
    return np.where(at < len(pos), q, 0.0)


def _at_conf(G, nd_all, tp, ignored, score, conf, npig):
    """(P, R) [B] of one class at IoU 0.50 counting the detections with score >= ``conf``:
    weighted true positives over weighted counted detections (0 when there are none) and over
    the weighted ground-truth count."""
    j = int(np.count_nonzero(score >= conf))          # ``score`` is sorted descending
    at, shape = np.array([j]), (G.shape[0], 1)
    tp_w = np.broadcast_to(_weight_before(G, np.flatnonzero(tp), at), shape)[:, 0].astype(np.float64)
    n_w = (nd_all[:, j - 1] if j else 0) - np.broadcast_to(_weight_before(G, np.flatnonzero(ignored), at), shape)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_w > 0, tp_w / np.maximum(n_w, 1), 0.0), tp_w / np.maximum(npig, 1)


def _scan_class(m, k, W, npig, conf=None, curves=False):
    """One class under a block of weights ``W`` [B, I]: AP [B, T] (or, with ``curves``, the
    interpolated precision [B, T, R]) and, with ``conf``, P and R [B] at IoU 0.50."""
    score, img, tp, ignored = m.category(k)
    G = np.take(W, img, axis=1)                       # [B, n] each detection's weight
    nd_all = np.cumsum(G, axis=1, dtype=G.dtype)
    counts = _recall_counts(npig)
    q = np.stack([_interpolated(G, nd_all, tp[t], ignored[t], counts) for t in range(len(IOU_THRS))], 1)
    pr = _at_conf(G, nd_all, tp[0], ignored[0], score, conf, npig) if conf is not None else None
    return (q if curves else q.mean(axis=2)), pr


def _as_weights(matches, weights):
    """Weights as an integer [B, I] array; None: all ones (the plain evaluation). int32 (half the
    memory traffic of the cumulative sums) unless a class's weighted count could pass 2**31."""
    if weights is None:
        return np.ones((1, len(matches.img_ids)), np.int32)
    W = np.atleast_2d(np.asarray(weights))
    if W.shape[-1] != len(matches.img_ids) or (W < 0).any():
        raise ValueError(f"weights must be [B, {len(matches.img_ids)}] counts >= 0, got shape {W.shape}")
    largest = int(W.astype(np.int64).sum(axis=1).max(initial=0)) * MAX_DETS
    return W.astype(np.int32 if largest < 2 ** 31 else np.int64)


def _npig(matches, W):
    """[B, K] weighted ground-truth counts (an exact integer product through BLAS)."""
    return np.rint(W.astype(np.float64) @ matches.npig.T.astype(np.float64)).astype(np.int64)


def scores(matches, weights=None, conf=None, curves=False):
    """AP per resample, threshold and class [B, T, K] (-1 where the class has no ground truth in
    the resample, as COCOeval), or with ``curves`` the interpolated precision [B, T, R, K]; with
    ``conf`` also P and R [B, K] at IoU 0.50 (NaN without ground truth). ``weights`` [B, I]: how
    often each image counts in each resample (None: once)."""
    W = _as_weights(matches, weights)
    npig = _npig(matches, W)
    B, K, T = W.shape[0], len(matches.cat_ids), len(IOU_THRS)
    ap = np.zeros((B, T, len(REC_THRS), K) if curves else (B, T, K))
    P, R = np.full((B, K), np.nan), np.full((B, K), np.nan)
    for k in range(K):
        ap[..., k], pr = _scan_class(matches, k, W, npig[:, k], conf, curves)
        if pr is not None:
            P[:, k], R[:, k] = pr
    absent = npig == 0
    ap[np.broadcast_to(absent[:, None, None, :] if curves else absent[:, None, :], ap.shape)] = -1.0
    P[absent], R[absent] = np.nan, np.nan
    return {"AP": ap, "P": P, "R": R}


def average_precision(matches, weights=None):
    """[B, T, K] COCO AP per resample, IoU threshold and class, -1 where a class has no ground
    truth (see ``scores``). AP50 is threshold 0; AP50:95 of a class is the mean over thresholds."""
    return scores(matches, weights)["AP"]


def precision_recall(matches, conf, weights=None):
    """(P, R) [B, K] at IoU 0.50 for the detections with score >= ``conf``."""
    s = scores(matches, weights, conf=conf)
    return s["P"], s["R"]


def best_conf(matches):
    """The operating confidence of a run, as Ultralytics chooses it: the first point of the
    1000-step grid over [0, 1] (``class_stats``'s) where the mean F1 = 2PR / (P + R) at IoU 0.50
    over the classes with ground truth is highest, on the full set (held fixed in every resample:
    choosing it again per resample would add the choice's noise to the difference)."""
    K = len(matches.cat_ids)
    f1 = np.zeros((K, len(CONF_GRID)))
    npig = matches.npig.sum(axis=1)
    for k in range(K):
        score, _, tp, ignored = matches.category(k)
        keep = ~ignored[0]
        n_above = np.searchsorted(-score[keep], -CONF_GRID, "right")
        tp_above = np.concatenate([[0], np.cumsum(tp[0][keep])])[n_above]
        p = tp_above / np.maximum(n_above, 1)
        r = tp_above / max(npig[k], 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1[k] = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    valid = npig > 0
    return float(CONF_GRID[int(np.argmax(f1[valid].mean(axis=0)))]) if valid.any() else 0.25


def _mean_valid(values, valid):
    """Mean over the valid columns of each row (NaN where none is)."""
    total = np.where(valid, values, 0.0).sum(axis=1)
    n = valid.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def metrics(matches, weights=None, conf=0.25):
    """{metric: [B, K + 1]} AP50, AP50_95, P, R per resample, column 0 the mean over the classes
    with ground truth ("all"; for AP the 12-stat summary's value), NaN for a class without."""
    s = scores(matches, weights, conf=conf)
    valid = s["AP"][:, 0, :] > -1
    ap = np.where(valid[:, None, :], s["AP"], np.nan)
    out = {"AP50": ap[:, 0, :], "AP50_95": ap.mean(axis=1), "P": s["P"], "R": s["R"]}
    return {name: np.concatenate([_mean_valid(v, valid)[:, None], v], axis=1) for name, v in out.items()}


def resample_weights(rng, n_images, count):
    """[count, n_images] int32: how often each of ``count`` bootstrap resamples draws each image
    (n_images draws with replacement). One generator call per resample, so a seed gives the same
    resamples whatever block size the caller works in."""
    draws = np.stack([rng.integers(0, n_images, n_images) for _ in range(count)])
    flat = (draws + np.arange(count)[:, None] * n_images).ravel()
    return np.bincount(flat, minlength=count * n_images).reshape(count, n_images).astype(np.int32)


# --------------------------------------------------------------------------------------------
# 2. the paired comparison


@dataclass
class Comparison:
    """Two runs on one validation set. Each dict maps a metric (``METRICS``) to an array over
    ``classes`` ("all" first); NaN for a class without ground truth (and an interval NaN where
    no resample held the class)."""
    classes: list
    a: dict                      # run A on the full set
    b: dict                      # run B on the full set
    diff: dict                   # B - A
    low: dict                    # percentile interval of the difference
    high: dict
    significant: dict            # bool: the interval excludes 0
    boot: dict = field(repr=False)   # [resamples, K + 1] the bootstrap differences
    conf_a: float = 0.25         # the confidence P and R are taken at, per run
    conf_b: float = 0.25
    recall: np.ndarray = field(default=None, repr=False)   # [101] COCO's recall points
    pr_a: np.ndarray = field(default=None, repr=False)     # [101] mean interpolated precision at IoU 0.50
    pr_b: np.ndarray = field(default=None, repr=False)
    images: int = 0
    resamples: int = 0
    seed: int = 0
    level: float = 0.95

    def rows(self):
        """The table: one row per (class, metric), "all" first."""
        return [{"class": name, "metric": metric, "run A": float(self.a[metric][i]),
                 "run B": float(self.b[metric][i]), "difference": float(self.diff[metric][i]),
                 "ci_low": float(self.low[metric][i]), "ci_high": float(self.high[metric][i]),
                 "significant": bool(self.significant[metric][i])}
                for i, name in enumerate(self.classes) for metric in METRICS]


def _block_size(runs, n_images, resamples):
    """Resamples per block. Fastest when the largest class's weights [B, n] int32 stay in the
    cache (``CACHE``; 5,000 images x 100 detections, 6,500 in the largest class: 64-128 resamples
    per block took 5.5 s per 1,000 for one run, 512 took 8 s), never more than ``MEMORY`` allows
    (per detection and resample: its weight and their cumulative sums, the true positives'
    counts, precisions and envelope, at most ~32 bytes; plus the block's weights)."""
    largest = max([int(np.diff(m.starts).max(initial=0)) for m in runs] + [1])
    fits = MEMORY // (32 * largest + 4 * n_images)
    return int(np.clip(min(fits, max(CACHE // (4 * largest), 16)), 1, max(resamples, 1)))


def _pr_curve(matches):
    """[101] the mean over classes with ground truth of the interpolated precision at IoU 0.50."""
    q = scores(matches, curves=True)["AP"][0, 0]           # [R, K]
    valid = q[0] > -1
    return q[:, valid].mean(axis=1) if valid.any() else np.zeros(len(REC_THRS))


def _interval(boot, level):
    """Percentile interval of each column of ``boot``, NaN where every resample is NaN."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(boot, [tail, 100 - tail], axis=0)


def compare(gt, rows_a, rows_b, img_ids=None, resamples=1000, seed=0, level=0.95, conf=None, block=None):
    """Compare run B with run A on the images ``img_ids`` of the ``COCO`` ``gt``: AP50, AP50:95,
    P and R of both on the full set, B - A, and its ``level`` percentile interval from a paired
    bootstrap over the images (each resample draws the images once, with replacement, and both
    runs are scored on that draw; numpy ``default_rng(seed)``).

    P and R are taken at each run's own operating confidence (``best_conf``: the maximum mean F1
    over classes on the full set, as Ultralytics reports them), held fixed across resamples; a
    number ``conf`` takes both runs at that confidence. ``block``: resamples scored together
    (default ``_block_size``; the result does not depend on it).

    Each interval is for its own class and metric: over 80 classes about 4 exclude 0 by chance at
    the 95% level, so a per-class ``significant`` is a pointer, the "all" row the verdict. A class
    missing from a resample (no ground truth drawn) leaves that resample out of its interval.
    """
    ma, mb = match_run(gt, rows_a, img_ids), match_run(gt, rows_b, img_ids)
    conf_a, conf_b = (best_conf(ma), best_conf(mb)) if conf is None else (conf, conf)
    full_a = {k: v[0] for k, v in metrics(ma, None, conf_a).items()}
    full_b = {k: v[0] for k, v in metrics(mb, None, conf_b).items()}
    n_images = len(ma.img_ids)
    rng = np.random.default_rng(seed)
    size = block or _block_size((ma, mb), n_images, resamples)
    parts = []
    for start in range(0, resamples, size):
        W = resample_weights(rng, n_images, min(size, resamples - start))
        sa, sb = metrics(ma, W, conf_a), metrics(mb, W, conf_b)
        parts.append({k: sb[k] - sa[k] for k in METRICS})
    boot = {k: np.concatenate([p[k] for p in parts]) for k in METRICS}
    bounds = {k: _interval(boot[k], level) for k in METRICS}
    return Comparison(
        classes=["all"] + list(ma.names), a=full_a, b=full_b, diff={k: full_b[k] - full_a[k] for k in METRICS},
        low={k: b[0] for k, b in bounds.items()}, high={k: b[1] for k, b in bounds.items()},
        significant={k: (b[0] > 0) | (b[1] < 0) for k, b in bounds.items()}, boot=boot,
        conf_a=conf_a, conf_b=conf_b, recall=REC_THRS.copy(), pr_a=_pr_curve(ma), pr_b=_pr_curve(mb),
        images=n_images, resamples=resamples, seed=seed, level=level)


def write_csv(result, path):
    """The comparison table as csv (class, metric, run A, run B, difference, ci_low, ci_high,
    significant), written atomically; floats to 6 significant digits as every table of a run."""
    return write_rows(path, [format_row(r) for r in result.rows()])


def _curve(pr, result):
    """(recall, precision) of a curve given as a pair or as precision on COCO's recall points."""
    if isinstance(pr, (tuple, list)) and len(pr) == 2:
        return np.asarray(pr[0]), np.asarray(pr[1])
    return result.recall, np.asarray(pr)


def _draw_differences(ax, result, metric="AP50_95"):
    """Per-class differences with their intervals as horizontal error bars, "all" on top; the
    significant ones coloured (green: B better, red: B worse)."""
    d, lo, hi = result.diff[metric], result.low[metric], result.high[metric]
    rows = [i for i in range(len(result.classes)) if np.isfinite(d[i])]
    for y, i in enumerate(rows):
        colour = ("tab:green" if d[i] > 0 else "tab:red") if result.significant[metric][i] else "0.5"
        err = [[max(d[i] - lo[i], 0.0)], [max(hi[i] - d[i], 0.0)]] if np.isfinite(lo[i]) else None
        ax.errorbar(d[i], y, xerr=err, fmt="o", color=colour, ms=4, capsize=2)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.axhline(0.5, color="0.8", lw=0.8)                # "all" above, the classes below
    ax.set_title(f"B - A over {result.images} images, {result.resamples} paired resamples", fontsize=9)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([result.classes[i] for i in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f"{metric.replace('_', ':')} difference B - A ({100 * result.level:g}% interval)")


def plot(result, path, pr_a=None, pr_b=None, dpi=150):
    """The comparison as a PNG: per-class AP50:95 differences with their intervals, and beside it
    both runs' precision-recall curves at IoU 0.50 (the result's own unless ``pr_a`` / ``pr_b``
    are given: precision on COCO's 101 recall points, or a (recall, precision) pair). Returns the
    path, or None with one warning when matplotlib is not installed."""
    plt = pyplot("the bootstrap comparison plot")
    if plt is None:
        return None
    n = int(np.isfinite(result.diff["AP50_95"]).sum())
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.2 * n + 1.5)),
                                      gridspec_kw={"width_ratios": [3, 2]})
    _draw_differences(left, result)
    for label, pr, ap in (("A", result.pr_a if pr_a is None else pr_a, result.a["AP50"][0]),
                          ("B", result.pr_b if pr_b is None else pr_b, result.b["AP50"][0])):
        r, p = _curve(pr, result)
        right.plot(r, p, label=f"run {label} (AP50 {ap:.3f})")
    right.set_xlabel("recall")
    right.set_ylabel("precision (IoU 0.50, mean over classes)")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1.02)
    right.legend(loc="lower left")
    fig.tight_layout()
    return save_png(fig, path, dpi)
