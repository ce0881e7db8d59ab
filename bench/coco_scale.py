"""COCO-scale data-set cost: build time and memory of our YOLOX and SSD data sets and of the
released YOLOX 0.3.0's ``COCODataset`` on a COCO-2017-train-sized set, and COCO evaluation of
5,000 images x 100 detections through our gather + scoring path against plain pycocotools.

Why: both data sets used to keep a full pycocotools index (every polygon included) in the main
process and in every loader worker; a forked worker that touches Python objects copies them page
by page (upstream YOLOX issues #91, #103, #211). Each implementation runs in its own fresh
interpreter (``--child``), so one's heap never inflates another's figures, and the released YOLOX
(whose package is also called ``yolox``) can be put first on ``sys.path`` there.

What each child reports (one JSON line):
- ``build_s``: wall seconds of the data-set constructor, json parse included;
- ``rss_mb``: the process's RSS right after the build (VmRSS);
- ``pss_mb``: summed PSS (``/proc/PID/smaps_rollup``) of the main process and 4 DataLoader workers
  after every worker has pulled its share of one whole epoch. What is pulled: each index's training
  labels through the data set's own label path (``load_anno(i)`` for both YOLOX data sets: ours and
  the released one's ``annotations[i][0]``; ``target(i)`` for SSD: the normalised boxes and labels
  its ``__getitem__`` trains on), in batches of 64 by a sequential sampler, so the four workers share
  the epoch; images are not decoded (that cost is the same for every implementation and would bury
  the label memory). Each item returns only its box count, so nothing flows back to the main process.

The generated set (``generate``): N images with COCO's listed fields and sizes, a negative-binomial
number of boxes per image (mean 7.27 as train2017's 860,001 / 118,287, about 1% of images with
none), each with a polygon of 10-34 points around its box (about COCO's 450 MB json at 118,287
images), 1% crowd boxes with an uncompressed RLE, 80 categories with COCO's sparse ids; image files
are a pool of 8 small JPEGs, one per listed size, hard-linked under every listed name.

``python bench/coco_scale.py`` (everything: ~10 min on 2 cores with ``--baseline``; the sets are
generated once into ``--cache``), ``--sizes 1000,10000`` for the cost curve alone, ``--no-eval`` to
skip the evaluation rows, ``--eval-only`` for them alone, ``--no-peer`` to skip the released
YOLOX (needs its source: ``--peer-path``). With ``--baseline`` the evaluation also runs through the
older checkout's scoring (``coco_scale_eval_vs_baseline``: what the per-class table, curves and
confusion matrix cost).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# COCO 2017's 80 category ids (1..90 with gaps) and the sizes its images most often have (h, w).
COCO_CAT_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
IMAGE_SIZES = ((480, 640), (640, 480), (427, 640), (640, 427), (375, 500), (500, 375), (426, 640), (360, 640))
MEAN_BOXES = 860_001 / 118_287
WORKERS = 4
GENERATOR_VERSION = 1


# ---------------------------------------------------------------------------------- generation
def _annotations(rng, img_ids, hw, counts, first_id):
    """The annotation dicts of a chunk of images (``counts[i]`` boxes on image ``img_ids[i]``)."""
    n = int(counts.sum())
    owner = np.repeat(np.arange(len(img_ids)), counts)
    h, w = hw[owner, 0].astype(np.float64), hw[owner, 1].astype(np.float64)
    bw = np.clip(rng.exponential(0.18, n), 0.01, 1.0) * w
    bh = np.clip(rng.exponential(0.18, n), 0.01, 1.0) * h
    x = rng.uniform(0, 1, n) * (w - bw)
    y = rng.uniform(0, 1, n) * (h - bh)
    # 0.5% of the boxes reach past the right or bottom edge, as an annotation tool's rounding might
    spill = rng.random(n) < 0.005
    x[spill] += bw[spill] * 0.3
    bbox = np.round(np.stack([x, y, bw, bh], axis=1), 2)
    crowd = rng.random(n) < 0.01
    cats = np.asarray(COCO_CAT_IDS)[rng.integers(0, len(COCO_CAT_IDS), n)]
    points = rng.integers(10, 35, n)
    area = bw * bh * rng.uniform(0.45, 0.8, n)
    out = []
    for k in range(n):
        cx, cy, rx, ry = x[k] + bw[k] / 2, y[k] + bh[k] / 2, bw[k] / 2, bh[k] / 2
        if crowd[k]:
            seg = {"counts": rng.integers(0, 400, int(rng.integers(50, 300))).tolist(),
                   "size": [int(h[k]), int(w[k])]}
        else:
            t = np.sort(rng.uniform(0, 2 * np.pi, points[k]))
            r = rng.uniform(0.7, 1.0, points[k])
            poly = np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)
            seg = [np.round(poly.ravel(), 2).tolist()]
        out.append({"segmentation": seg, "area": float(area[k]), "iscrowd": int(crowd[k]),
                    "image_id": int(img_ids[owner[k]]), "bbox": bbox[k].tolist(),
                    "category_id": int(cats[k]), "id": first_id + k})
    return out


def _pool_jpegs(folder):
    """One small JPEG per listed size (a flat grey image compresses to a few kB)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for h, w in IMAGE_SIZES:
        path = folder / f"pool_{h}x{w}.jpg"
        if not path.is_file():
            cv2.imwrite(str(path), np.full((h, w, 3), 110, np.uint8))
        paths.append(path)
    return paths


def generate(root, num_images, split="train2017", seed=0, chunk=2000):
    """Write ``root/annotations/instances_{split}.json`` and ``root/{split}/`` for ``num_images``
    images (see the module docstring); returns the json's path. Deterministic from ``seed``; a set
    already written with the same arguments is reused (``root/{split}.done`` records them)."""
    root = Path(root)
    ann_file = root / "annotations" / f"instances_{split}.json"
    marker = root / f"{split}.done"
    params = {"num_images": num_images, "seed": seed, "version": GENERATOR_VERSION}
    if marker.is_file() and ann_file.is_file() and json.loads(marker.read_text()) == params:
        return ann_file
    rng = np.random.default_rng(seed)
    img_ids = np.sort(rng.choice(600_000, num_images, replace=False)) + 1
    size_index = rng.integers(0, len(IMAGE_SIZES), num_images)
    hw = np.asarray(IMAGE_SIZES)[size_index]
    p = 1.3 / (1.3 + MEAN_BOXES)                      # negative binomial with mean MEAN_BOXES
    counts = rng.negative_binomial(1.3, p, num_images)
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    pool = _pool_jpegs(root / "pool")
    for img_id, s in zip(img_ids.tolist(), size_index.tolist()):
        dest = img_dir / f"{img_id:012d}.jpg"
        if not dest.exists():
            os.link(pool[s], dest)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ann_file.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write('{"info": {"description": "detkit COCO-scale synthetic set", "version": "1.0", '
                '"year": 2017}, "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", '
                '"id": 4, "name": "Attribution License"}], "images": [')
        for start in range(0, num_images, chunk):
            part = [{"license": 4, "file_name": f"{i:012d}.jpg",
                     "coco_url": f"http://images.cocodataset.org/{split}/{i:012d}.jpg",
                     "height": h, "width": w, "date_captured": "2013-11-14 11:18:45",
                     "flickr_url": f"http://farm4.staticflickr.com/1/{i}_0123456789_z.jpg", "id": i}
                    for i, (h, w) in zip(img_ids[start:start + chunk].tolist(), hw[start:start + chunk].tolist())]
            f.write(("," if start else "") + json.dumps(part)[1:-1])
        f.write('], "annotations": [')
        next_id, wrote = 1, False
        for start in range(0, num_images, chunk):
            sl = slice(start, start + chunk)
            part = _annotations(rng, img_ids[sl], hw[sl], counts[sl], next_id)
            next_id += len(part)
            if part:
                f.write(("," if wrote else "") + json.dumps(part)[1:-1])
                wrote = True
        cats = [{"supercategory": "thing", "id": c, "name": f"class{c}"} for c in COCO_CAT_IDS]
        f.write('], "categories": ' + json.dumps(cats) + "}")
    tmp.replace(ann_file)
    marker.write_text(json.dumps(params))
    return ann_file


# ---------------------------------------------------------------------------------- measuring
def _status_kb(field, pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rollup_kb(pid):
    """``/proc/PID/smaps_rollup`` as {field: kB}: ``Pss`` is the process's private pages plus its
    share of each page it shares; ``Private_Clean + Private_Dirty`` are the pages only it maps
    (in a forked worker: what it has copied or allocated since the fork)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def _children(pid):
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


class _Labels:
    """The data set's label path as a map-style data set: item ``i`` reads image ``i``'s labels
    and returns only their count, so nothing but a number goes back to the main process."""

    def __init__(self, read, n):
        self.read, self.n = read, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return len(self.read(index))


def _constructor(impl):
    """A function building ``impl``'s data set on a root's train2017 split and returning it with
    its label reader. Imports happen here, before the clock and the first RSS reading."""
    if impl in ("yolox", "peer"):
        from yolox.data.datasets import COCODataset

        def build(root):
            ds = COCODataset(str(root), json_file="instances_train2017.json", name="train2017",
                             img_size=(640, 640))
            return ds, ds.load_anno
        return build
    from ssd.data import CocoDetection

    def build(root):
        ds = CocoDetection(root / "train2017", root / "annotations" / "instances_train2017.json", train=True)
        if hasattr(ds, "target"):
            return ds, lambda i: ds.target(i)[1]
        return ds, lambda i: ds.targets[ds.ids[i]][1]          # a checkout from before ``target``
    return build


def child_dataset(impl, root, path_first):
    """One implementation in this fresh interpreter: build, RSS, then the summed PSS of this
    process and WORKERS loader workers after one epoch of labels (module docstring)."""
    if path_first:
        sys.path[:0] = path_first
    import torch
    from torch.utils.data import DataLoader

    if impl == "peer":
        import yolox
        assert yolox.__version__ == "0.3.0", yolox.__file__
    build = _constructor(impl)
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    ds, read = build(Path(root))
    build_s = time.perf_counter() - t0
    rss = _status_kb("VmRSS")
    loader = DataLoader(_Labels(read, len(ds)), batch_size=64, num_workers=WORKERS, persistent_workers=True,
                        multiprocessing_context="fork")
    t0 = time.perf_counter()
    boxes = sum(int(batch.sum()) for batch in loader)       # the epoch ends; the workers stay
    epoch_s = time.perf_counter() - t0
    workers = _children(os.getpid())
    rollups = [_rollup_kb(pid) for pid in [os.getpid()] + workers]
    pss = [r["Pss"] for r in rollups]
    private = [r["Private_Clean"] + r["Private_Dirty"] for r in rollups[1:]]
    out = {"impl": impl, "images": len(ds), "boxes": boxes, "build_s": round(build_s, 3),
           "rss_before_mb": round(rss0 / 1024, 1), "rss_mb": round(rss / 1024, 1),
           "epoch_s": round(epoch_s, 2), "workers": len(workers),
           "pss_mb": round(sum(pss) / 1024, 1), "pss_main_mb": round(pss[0] / 1024, 1),
           "pss_worker_mb": [round(p / 1024, 1) for p in pss[1:]],
           "private_worker_mb": [round(p / 1024, 1) for p in private], "threads": torch.get_num_threads()}
    print(json.dumps(out), flush=True)


def detections(ann_file, per_image=100, seed=0):
    """Rows [N, 7] (image_id, x, y, w, h, score, category_id), ``per_image`` per image: each GT
    box (crowd ones excepted) jittered by ~8% of its size with 85% probability, the rest random
    boxes of random categories with lower scores, so AP is neither 0 nor 1."""
    data = json.loads(Path(ann_file).read_text())
    rng = np.random.default_rng(seed)
    img_ids = np.array([im["id"] for im in data["images"]], dtype=np.float64)
    hw = np.array([(im["height"], im["width"]) for im in data["images"]], dtype=np.float64)
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    row_of = {int(i): r for r, i in enumerate(img_ids)}
    gt_img = np.array([row_of[a["image_id"]] for a in anns], dtype=np.int64)
    gt_box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt_cat = np.array([a["category_id"] for a in anns], dtype=np.float64)
    hit = rng.random(len(anns)) < 0.85
    jitter = rng.normal(0, 0.08, (len(anns), 4)) * gt_box[:, [2, 3, 2, 3]]
    tp = np.concatenate([img_ids[gt_img][:, None], gt_box[:, :2] + jitter[:, :2],
                         np.maximum(gt_box[:, 2:] + jitter[:, 2:], 1.0),
                         rng.uniform(0.3, 1.0, (len(anns), 1)), gt_cat[:, None]], axis=1)[hit]
    tp = tp[np.argsort(tp[:, 0], kind="stable")]
    # per image: its true positives (at most per_image) then random boxes up to per_image
    row = np.searchsorted(img_ids, tp[:, 0])
    rank = np.arange(len(tp)) - np.searchsorted(row, row)      # position within its image
    tp, row = tp[rank < per_image], row[rank < per_image]
    fill = per_image - np.bincount(row, minlength=len(img_ids))
    owner = np.repeat(np.arange(len(img_ids)), fill)
    wh = rng.uniform(0.02, 0.4, (len(owner), 2)) * hw[owner][:, ::-1]
    xy = rng.uniform(0, 1, (len(owner), 2)) * (hw[owner][:, ::-1] - wh)
    cats = np.asarray(COCO_CAT_IDS, dtype=np.float64)[rng.integers(0, len(COCO_CAT_IDS), len(owner))]
    fp = np.concatenate([img_ids[owner][:, None], xy, wh, rng.uniform(0.0, 0.6, (len(owner), 1)),
                         cats[:, None]], axis=1)
    return np.concatenate([tp, fp])


def _reset_peak_rss():
    """Start VmHWM (the process's peak RSS) over from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child_eval(impl, root, rows_file, project=str(ROOT)):
    """Score ``rows_file`` against ``root``'s val2017 split in this fresh interpreter: seconds
    from the json and the rows in memory to the 12 stats (ours: with the per-class table, curves
    and confusion matrix where ``project`` computes them), and the peak RSS meanwhile.
    ``project``: the checkout whose ``detcore`` is imported (``--baseline``: an older one)."""
    import contextlib
    import io

    import torch

    sys.path.insert(0, project)
    rows = np.load(rows_file)
    ann_file = Path(root) / "annotations" / "instances_val2017.json"
    if impl == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(str(ann_file))
                ev = COCOeval(gt, gt.loadRes(rows), "bbox")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            return np.asarray(ev.stats[:12]), "pycocotools"
    else:
        import tempfile

        from detcore.evaluation import coco_eval
        from detcore.data.coco import CocoSource

        if impl == "ours_pycocotools":                 # our path with the peer's scorer
            from pycocotools.cocoeval import COCOeval
            coco_eval._evaluator_class = lambda: COCOeval
        # the evaluation data set exists before scoring starts (built with the loader): not timed
        source = CocoSource(ann_file, Path(root) / "val2017")
        store = tempfile.NamedTemporaryFile(delete=False)
        torch.distributed.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)

        def run():
            result = coco_eval.gather_and_score(lambda: source.coco, rows, source.ids)
            assert project != str(ROOT) or result.classes is not None     # the per-class part ran
            return result.stats, coco_eval._evaluator_class().__module__.split(".")[0]
    rss0 = _status_kb("VmRSS")
    _reset_peak_rss()
    t0 = time.perf_counter()
    stats, scorer = run()
    seconds = time.perf_counter() - t0
    out = {"impl": impl, "scorer": scorer, "detections": len(rows), "seconds": round(seconds, 2),
           "rss_before_mb": round(rss0 / 1024, 1), "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
           "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "stats": [round(float(v), 6) for v in stats]}
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------- the parent
def _run(args, label):
    """Run this file with ``args`` in a fresh interpreter; its last JSON line, or None (and the
    reason on stderr) when it failed."""
    proc = subprocess.run([sys.executable, "-W", "ignore", str(Path(__file__).resolve()), *args],
                          capture_output=True, text=True, cwd=tempfile_dir())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
        print(f"{label} failed (exit {proc.returncode}): {tail}", file=sys.stderr, flush=True)
        return None
    return json.loads(lines[-1])


def tempfile_dir():
    """The children run outside the repository, so nothing but their sys.path decides which
    ``yolox`` they import."""
    import tempfile
    return tempfile.gettempdir()


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _impls(args):
    """(name, sys.path entries put first) of every data-set implementation measured."""
    out = [("yolox", [str(ROOT)]), ("ssd", [str(ROOT)])]
    if args.baseline:
        out += [("yolox_baseline", [args.baseline]), ("ssd_baseline", [args.baseline])]
    peer = [d for d in args.peer_path.split(os.pathsep) if d]
    if args.no_peer:
        pass
    elif peer and (Path(peer[0]) / "yolox" / "__init__.py").is_file():
        out.append(("peer", peer))
    else:
        from common import emit
        emit(bench="coco_scale", impl="peer", skipped=f"no released YOLOX source at {peer[:1]} (--peer-path; "
             "see bench/README.md)")
    return out


def bench_datasets(args, emit):
    rows = {}
    for n in args.sizes:
        root = Path(args.cache) / f"n{n}"
        t0 = time.perf_counter()
        ann_file = generate(root, n)
        print(f"set of {n} images ready in {time.perf_counter() - t0:.0f} s: {ann_file} "
              f"({ann_file.stat().st_size / 1e6:.0f} MB)", file=sys.stderr, flush=True)
        for impl, path in _impls(args):
            out = _run(["--child", impl.replace("_baseline", ""), str(root), json.dumps(path)], f"{impl} at {n}")
            if out is None:
                emit(bench="coco_scale", impl=impl, images_listed=n, skipped="failed (see stderr)")
                continue
            out.update(impl=impl, images_listed=n, json_mb=round(ann_file.stat().st_size / 1e6, 1),
                       pss_vs_rss=_ratio(out["pss_mb"], out["rss_mb"]))
            rows[impl, n] = out
            emit(bench="coco_scale", **out)
    return rows


def report_datasets(args, rows, emit):
    """The targets at the largest size, then the cost curve of each implementation."""
    n = max(args.sizes)
    peer = rows.get(("peer", n))
    for impl in [i for i, _ in _impls(args) if i != "peer"]:
        r = rows.get((impl, n))
        if r is None:
            continue
        line = {"impl": impl, "images_listed": n, "build_vs_peer": _ratio(r["build_s"], peer and peer["build_s"]),
                "pss_vs_own_rss": r["pss_vs_rss"], "rss_vs_peer": _ratio(r["rss_mb"], peer and peer["rss_mb"]),
                "pss_vs_peer": _ratio(r["pss_mb"], peer and peer["pss_mb"])}
        goals = {"build_vs_peer": 0.5, "pss_vs_own_rss": 1.5, "rss_vs_peer": 0.5, "pss_vs_peer": 0.5}
        line["met"] = {k: (line[k] <= g if line[k] is not None else None) for k, g in goals.items()}
        emit(bench="coco_scale_targets", **line)
    sizes = sorted(args.sizes)
    for impl in sorted({i for i, _ in rows}):
        have = [m for m in sizes if (impl, m) in rows]
        if len(have) < 2:
            continue
        build = [rows[impl, m]["build_s"] for m in have]
        data = [round(rows[impl, m]["rss_mb"] - rows[impl, m]["rss_before_mb"], 1) for m in have]
        # per-image cost of each step up relative to the one below: <= 1 is linear or better
        steps = [round((build[k + 1] / have[k + 1]) / (build[k] / have[k]), 3) for k in range(len(have) - 1)]
        emit(bench="coco_scale_curve", impl=impl, images_listed=have, build_s=build, data_mb=data,
             build_per_image_growth=steps)


def bench_eval(args, emit):
    root = Path(args.cache) / f"val{args.eval_images}"
    ann_file = generate(root, args.eval_images, split="val2017", seed=1)
    rows_file = root / f"rows_{args.per_image}.npy"
    if not rows_file.is_file():
        np.save(rows_file, detections(ann_file, args.per_image))
    results = {}
    runs = [("ours", "ours", str(ROOT)), ("pycocotools", "pycocotools", str(ROOT))]
    if args.baseline:          # the same path in an older checkout: what the per-class part costs
        runs.append(("ours_baseline", "ours", str(Path(args.baseline).resolve())))
    for label, impl, project in runs:
        out = _run(["--child-eval", impl, str(root), str(rows_file), project], f"eval {label}")
        if out is None:
            emit(bench="coco_scale_eval", impl=impl, skipped="failed (see stderr)")
            continue
        out.update(images=args.eval_images, world_size=1, impl=label)
        results[label] = out
        emit(bench="coco_scale_eval", **out)
    if len(results) == 2:
        ours, ref = results["ours"], results["pycocotools"]
        emit(bench="coco_scale_eval_compare", speedup=_ratio(ref["seconds"], ours["seconds"]),
             peak_rss_vs_peer=_ratio(ours["peak_rss_mb"], ref["peak_rss_mb"]),
             max_stat_diff=float(np.abs(np.subtract(ours["stats"], ref["stats"])).max()))
    if "ours" in results and "ours_baseline" in results:
        ours, base = results["ours"], results["ours_baseline"]
        emit(bench="coco_scale_eval_vs_baseline", seconds_ratio=_ratio(ours["seconds"], base["seconds"]),
             peak_rss_ratio=_ratio(ours["peak_rss_mb"], base["peak_rss_mb"]),
             same_stats=ours["stats"] == base["stats"])


def main(argv=None):
    from common import add_peer_path_arg, emit, machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="/tmp/detkit_coco_scale", help="where the generated sets are kept")
    parser.add_argument("--sizes", default="1000,10000,118287",
                        help="comma-separated image counts; the largest is the one the targets are read at")
    add_peer_path_arg(parser)
    parser.add_argument("--no-peer", action="store_true", help="leave out the released YOLOX")
    parser.add_argument("--baseline", default="",
                        help="a checkout of this project (e.g. `git archive` of an older commit) measured too")
    parser.add_argument("--no-eval", action="store_true", help="leave out the evaluation rows")
    parser.add_argument("--eval-only", action="store_true", help="the evaluation rows alone")
    parser.add_argument("--eval-images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=100, help="detections per image in the evaluation")
    args = parser.parse_args(argv)
    args.sizes = [int(v) for v in args.sizes.split(",") if v]
    emit(bench="coco_scale", **machine())
    if not args.eval_only:
        rows = bench_datasets(args, emit)
        report_datasets(args, rows, emit)
    if not args.no_eval:
        bench_eval(args, emit)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child_dataset(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    sys.exit(0)
if __name__ == "__main__" and sys.argv[1:2] == ["--child-eval"]:
    child_eval(*sys.argv[2:6])
    sys.exit(0)
if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
