"""YOLOX training data pipeline throughput (the YOLOX-S recipe at 640: Mosaic + MixUp + affine + HSV
+ flip) on the synthetic shapes set, images/s through a DataLoader, built by ``build_loader`` from
whichever ``yolox.data`` module is given: ours or the released YOLOX 0.3.0's.

Every measurement runs in its own fresh interpreter (``--child``), so one pipeline's heap or
forked workers never sit under another's, and the released YOLOX (whose package is also called
``yolox``) can be put first on ``sys.path`` there (``--peer-path``: its source, then its pure-Python
dependencies thop and tqdm; see bench/README.md). Ours and the peer alternate within each round,
so a machine that gets busier or quieter moves both.

What ``--compare`` prints (JSON lines):
- ``yolox_data``: img/s (and CPU ms per image, main + workers) per implementation, cache ('none', 'ram',
  'disk'; the peer without one) and
  worker count, the median of ``--rounds`` rounds, with each round's ratio to the peer;
- ``yolox_data_targets``: issue 33's goals at 2 workers: ours without a cache >= 2.5x the released
  pipeline, ours with ``--cache ram`` >= 4x;
- ``yolox_data_profile``: where one process spends its time per image (0 workers, cProfile, time of
  C calls charged to the Python function that made them; per stage the median of the rounds): decode (file
  read + decode + the
  letterbox resize the dataset does), mosaic (canvas and tiles), affine (the warp and its boxes),
  mixup, hsv, flip_letterbox (TrainTransform's flip, resize/pad and HWC -> CHW), collate (the
  DataLoader's collate), to_float (``consume``: our uint8 batch -> float32, which the released
  loader does not need, and one read of the batch, which both get), other;
- ``yolox_data_pss``: with ``--cache ram`` and 4 fork workers after each pulled its share of
  ``--pss-batches`` batches: the summed PSS (``/proc/PID/smaps_rollup``) of main + workers, the
  same without a cache, and what the cache added relative to the cached arrays' bytes (goal <= 1.2).
``--baseline DIR`` measures an older checkout of ours too (impl 'before', with the same cache kinds when it has a
cache).

The main process (both implementations) runs its torch ops on ``--main-threads`` threads, 1 by
default: it stands in for a GPU trainer's host side, which receives the batch and copies it to the
device with one thread. With torch's default (one thread per core) the 2-core machine, already
full with 2 workers, spends the main process's CPU in OpenMP spin-waits: on 2026-12-06 (Intel
Xeon) the main process took 2.4 ms of CPU per image with 2 threads against 1.7 with one, ours
with ``--cache ram`` ran 232-247 against 264-273 images/s, and the ratio to the released pipeline
was 3.54-3.62x (``--main-threads 0``) against the figures in docs/performance.md.

Our loader yields uint8 images, which the trainer turns into float32 (the released batches' type)
after the device copy: on CPU that conversion is in the main process, so it is timed with ours.
Each batch is also read once in the main process (``consume``), as training reads it; ``--no-touch``
leaves that out (then the released loader's float32 batches are never faulted in there).
"""
import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKERS_PSS = 4
GOALS = {"none": 2.5, "ram": 4.0}


def build_loader(data, data_dir, size, batch, workers, cache=False):
    """The upstream YOLOX-S augmentation settings, from whichever ``yolox.data`` module is given."""
    coco = data.COCODataset(data_dir, json_file="instances_train2017.json", name="train2017",
                            img_size=(size, size), preproc=data.TrainTransform(max_labels=50),
                            **({"cache": cache} if cache else {}))
    dataset = data.MosaicDetection(coco, (size, size), True,
                                   data.TrainTransform(max_labels=120, flip_prob=0.5, hsv_prob=1.0),
                                   degrees=10.0, translate=0.1, mosaic_scale=(0.1, 2),
                                   mixup_scale=(0.5, 1.5), shear=2.0, enable_mixup=True,
                                   mosaic_prob=1.0, mixup_prob=1.0)
    sampler = data.YoloBatchSampler(sampler=data.InfiniteSampler(len(dataset), seed=0), batch_size=batch,
                                    drop_last=False, mosaic=True)
    return data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=False,
                           worker_init_fn=data.worker_init_reset_seed, persistent_workers=workers > 0)


def images_per_s(data, data_dir, size, batch, batches, workers, cache=False):
    """Throughput after the first batch (worker start-up is not throughput); each batch's images
    are made float32 as the trainer would (a no-op for the released float32 batches)."""
    return rate_and_cpu(data, data_dir, size, batch, batches, workers, cache)[0]


_FLOAT_BUF = [None]


def consume(images, touch=True):
    """What the trainer does with a batch's images before its step: float32 (ours are uint8:
    the trainer's own ``yolox.data.dataloading.as_float`` into a reused buffer, when the
    measured checkout has it, else ``.float()`` as it did before), and (``touch``) one read of
    every value, as the first convolution or the host-to-device copy does. Without the read a
    batch that is never looked at costs its receiver nothing: the released loader's 4x larger
    float32 batches would then never be faulted in from shared memory."""
    try:
        from yolox.data.dataloading import as_float
    except ImportError:                     # the released YOLOX, or an older checkout
        images = images.float()
    else:
        images, _FLOAT_BUF[0] = as_float(images, _FLOAT_BUF[0])
    if touch:
        images.amax()
    return images


def _cpu_ticks(pids):
    """utime + stime (clock ticks) of these processes, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rate_and_cpu(data, data_dir, size, batch, batches, workers, cache=False, touch=True):
    """(images/s, CPU ms per image of the main process and its workers together) over the timed
    batches. The CPU time is what a shared machine distorts least: on a machine this pipeline has
    to itself, images/s is about cores / CPU time per image when the loader is CPU-bound."""
    it = iter(build_loader(data, data_dir, size, batch, workers, cache))
    next(it)
    pids = [os.getpid()] + _children(os.getpid())
    ticks0, t0 = _cpu_ticks(pids), time.perf_counter()
    for _ in range(batches):
        consume(next(it)[0], touch)
    wall, ticks = time.perf_counter() - t0, _cpu_ticks(pids) - ticks0
    return batch * batches / wall, 1000 * ticks / os.sysconf("SC_CLK_TCK") / (batch * batches)


# ------------------------------------------------------------------------------------- profile
STAGE_OF = {
    "decode": {"_decode", "_read_resized", "_cached", "read_source", "first_readable", "pull_item",
               "load_resized_img", "load_image", "load_anno", "labels_of_readable", "image_id", "_path",
               "warn_if_truncated_jpeg", "jpeg_truncated", "file_name_at", "at", "pull"},
    "mosaic": {"_build", "paint", "mosaic", "visible", "_tile", "_draw_mosaic", "get_mosaic_coordinate",
               "visible_region", "letterbox_shape"},
    "affine": {"random_affine", "get_affine_matrix", "affine_boxes", "apply_affine_to_bboxes",
               "get_aug_params", "_uniform"},
    "mixup": {"mixup", "_source", "adjust_box_anns"},
    "hsv": {"augment_hsv", "shift_hsv", "hue_lut", "hsv_lut"},
    "flip_letterbox": {"letterbox", "preproc", "_mirror", "hflip", "xyxy2cxcywh"},
    "to_float": {"as_float", "copy_converted"},
    "collate": {"collate", "default_collate", "_hwc_views", "collate_tensor_fn", "collate_numpy_array_fn",
                "collate_int_fn", "collate_float_fn", "collate_str_fn"},
}
_STAGE = {name: stage for stage, names in STAGE_OF.items() for name in names}


def _stage(func):
    """The stage a profiled Python function belongs to, by name and file (None: not ours to say)."""
    filename, _, name = func
    if name == "__getitem__" and "mosaicdetection" in filename:
        return "mosaic"                       # tiles pasted inline (released) / the warp call (ours, see below)
    if name == "__call__" and "data_augment" in filename:
        return "flip_letterbox"
    if "npyio" in filename or "_format_impl" in filename or filename.endswith("lib/format.py"):
        return "decode"                       # np.load of a disk-cache file
    if name.startswith("<") or filename == "~":
        return None
    return _STAGE.get(name)


def stage_profile(data, data_dir, size, batch, samples, cache):
    """ms per image per stage in this process (0 workers), from one cProfile run."""
    import torch

    torch.set_num_threads(1)                  # a loader worker's setting: the stages as workers run them
    loader = build_loader(data, data_dir, size, batch, 0, cache)
    dataset, items, collate = loader.dataset, iter(loader.batch_sampler), loader.collate_fn
    collate([dataset[i] for i in next(items)])          # warm-up: first allocations, lazy imports

    def run():
        done = 0
        while done < samples:
            batch_items = next(items)
            consume(collate([dataset[i] for i in batch_items])[0])
            done += len(batch_items)
        return done

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    done = prof.runcall(run)
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats
    totals = dict.fromkeys(list(STAGE_OF) + ["to_float", "other"], 0.0)
    for func, (_, _, tottime, _, callers) in stats.items():
        stage = _stage(func)
        if stage is not None:
            totals[stage] += tottime
            continue
        if func[2] in ("<method 'float' of 'torch._C.TensorBase' objects>",
                       "<method 'copy_' of 'torch._C.TensorBase' objects>",
                       "<method 'amax' of 'torch._C.TensorBase' objects>") or func[2].startswith(
                           "<built-in method empty_like"):
            totals["to_float"] += tottime
            continue
        # a C function (cv2, numpy, torch) or a helper: charge each caller's share to its stage
        for caller, (_, _, caller_tt, _) in callers.items():
            stage = _stage(caller)
            if stage == "mosaic" and caller[2] == "__getitem__" and "warpAffine" in func[2]:
                stage = "affine"
            totals[stage or "other"] += caller_tt
        if not callers:
            totals["other"] += tottime
    per_img = {k: round(1000 * v / done, 3) for k, v in totals.items()}
    return {"ms_per_img": per_img, "profiled_ms_per_img": round(1000 * sum(totals.values()) / done, 2),
            "wall_ms_per_img": round(1000 * wall / done, 2), "images": done}


# ------------------------------------------------------------------------------------- memory
def _children(pid):
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _mapping_pss_kb(pid, address):
    """Pss of the mapping of ``pid`` that holds ``address`` (/proc/PID/smaps), 0 when none does."""
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "Pss:":
                return int(line.split()[1])
    return 0


def loader_pss(data, data_dir, size, batch, batches, cache):
    """Summed PSS of the main process and WORKERS_PSS fork workers after ``batches`` batches."""
    loader = build_loader(data, data_dir, size, batch, WORKERS_PSS, cache)
    it = iter(loader)
    for _ in range(batches):
        next(it)
    pids = [os.getpid()] + _children(os.getpid())
    # let the workers fill every prefetch slot (shared-memory batches in flight count in PSS), so
    # runs with and without a cache hold the same number of them when measured
    ticks, deadline = -1, time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _cpu_ticks(pids[1:])
        if now == ticks:
            break
        ticks = now
        time.sleep(1.0)
    pss = [_pss_kb(p) for p in pids]
    base = loader.dataset._dataset
    cache_obj = getattr(base, "cache", None)
    buffer = getattr(cache_obj, "buffer", None)
    cache_pss = sum(_mapping_pss_kb(p, buffer.ctypes.data) for p in pids) if buffer is not None else 0
    return {"pss_mb": round(sum(pss) / 1024, 1), "pss_main_mb": round(pss[0] / 1024, 1),
            "cache_mapping_pss_mb": round(cache_pss / 1024, 1),
            "pss_worker_mb": [round(p / 1024, 1) for p in pss[1:]], "workers": len(pids) - 1,
            "cache_mb": round(cache_obj.nbytes / 2**20, 1) if cache_obj is not None else 0.0}


# ------------------------------------------------------------------------------------- children
def child(cfg):
    """One measurement in this fresh interpreter; prints one JSON line."""
    if cfg.get("path_first"):
        sys.path[:0] = cfg["path_first"]
    import yolox
    import yolox.data as data
    if cfg["impl"] == "peer":
        if getattr(yolox, "__version__", None) != "0.3.0":
            sys.exit(f"peer: 'yolox' resolved to {yolox.__file__}, not the released 0.3.0")
        import cv2
        cv2.setNumThreads(0)      # what its tools/train.py does (configure_module); forked workers inherit it
    if cfg["mode"] == "profile":
        import cv2
        cv2.setNumThreads(0)      # the stages as a loader worker runs them (ours sets it in worker_init_fn)
    args = (data, cfg["data_dir"], cfg["size"], cfg["batch"])
    cache = cfg.get("cache") or False
    if cfg["mode"] == "rate" and cfg.get("main_threads"):
        import torch
        torch.set_num_threads(cfg["main_threads"])     # see --main-threads
    if cfg["mode"] == "rate":
        rate, cpu = rate_and_cpu(*args, cfg["batches"], cfg["workers"], cache, cfg.get("touch", True))
        out = {"img_s": rate, "cpu_ms_per_img": cpu}
    elif cfg["mode"] == "profile":
        out = stage_profile(*args, cfg["samples"], cache)
    else:
        out = loader_pss(*args, cfg["batches"], cache)
    print(json.dumps({**out, "source": str(Path(yolox.__file__).parent)}), flush=True)


def run_child(cfg):
    env = dict(os.environ, PYTHONPATH="")         # the child decides what is first on its path
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
                          capture_output=True, text=True, cwd=cfg["data_dir"], env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise SystemExit(f"yolox_data child {cfg['impl']} {cfg['mode']} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def implementations(args):
    """(impl, sys.path entries put first, cache kinds it is measured with)."""
    ours = [str(ROOT), str(HERE)]
    impls = [("ours", ours, args.caches)]
    if args.baseline:
        cached = (Path(args.baseline) / "yolox" / "data" / "cache.py").is_file()     # an older tree may have none
        impls.append(("before", [args.baseline, str(HERE)], args.caches if cached else ["none"]))
    if args.compare:
        peer = [d for d in args.peer_path.split(os.pathsep) if d]
        if peer and (Path(peer[0]) / "yolox" / "__init__.py").is_file():
            impls.append(("peer", peer + [str(HERE)], ["none"]))
        else:
            from common import emit
            emit(bench="yolox_data_skipped", impl="peer", skipped=f"no released YOLOX source at {peer[:1]} "
                 "(--peer-path; see bench/README.md)")
    return impls


def main():
    from common import add_peer_path_arg, emit, machine, make_shapes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-train", type=int, default=128)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of ours/peer runs; medians are reported")
    ap.add_argument("--caches", default="none,ram,disk", help="our cache kinds to time")
    ap.add_argument("--compare", action="store_true",
                    help="also time the released YOLOX 0.3.0 pipeline, profile both, measure the RAM cache's PSS")
    add_peer_path_arg(ap)
    ap.add_argument("--baseline", default="", help="an older checkout of this project, measured too ('before')")
    ap.add_argument("--profile-samples", type=int, default=96)
    ap.add_argument("--pss-batches", type=int, default=12)
    ap.add_argument("--no-touch", action="store_true",
                    help="time the batches without reading them (see ``consume``; the older way)")
    ap.add_argument("--main-threads", type=int, default=1,
                    help="torch threads of the main process, which stands in for a GPU trainer's host side "
                         "(receive, read, convert: one thread's work there); 0: torch's default, one per core "
                         "(with 2 workers on 2 cores its OpenMP team spin-waits: see the module docstring)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    args.caches = [c for c in args.caches.split(",") if c]

    emit(bench="yolox_data_machine", **machine())
    impls = implementations(args)
    with tempfile.TemporaryDirectory() as tmp:
        make_shapes(tmp, args.num_train, 0, seed=0)
        common = {"data_dir": tmp, "size": args.size, "batch": args.batch}
        if "disk" in args.caches:     # build the disk cache once, outside the timed runs (as a 2nd epoch would find it)
            run_child({**common, "impl": "ours", "path_first": impls[0][1], "mode": "rate", "batches": 1,
                       "workers": 0, "cache": "disk"})
        rates, cpus = {}, {}
        for workers in [int(w) for w in args.workers.split(",")]:
            for _ in range(args.rounds):
                for impl, path, caches in impls:
                    for cache in caches:
                        cfg = {**common, "impl": impl, "path_first": path, "mode": "rate", "touch": not args.no_touch,
                               "main_threads": args.main_threads,
                               "batches": args.batches, "workers": workers, "cache": None if cache == "none" else cache}
                        got = run_child(cfg)
                        rates.setdefault((impl, cache, workers), []).append(got["img_s"])
                        cpus.setdefault((impl, cache, workers), []).append(got["cpu_ms_per_img"])
            peer = rates.get(("peer", "none", workers))
            for impl, _, caches in impls:
                for cache in caches:
                    r, c = rates[(impl, cache, workers)], cpus[(impl, cache, workers)]
                    row = dict(bench="yolox_data", impl=impl, cache=cache, size=args.size, batch=args.batch,
                               workers=workers, img_s=round(statistics.median(r), 2),
                               img_s_rounds=[round(v, 2) for v in r],
                               cpu_ms_per_img=round(statistics.median(c), 2))
                    if peer and impl != "peer":
                        ratios = [a / b for a, b in zip(r, peer)]
                        cpu_ratios = [b / a for a, b in zip(c, cpus[("peer", "none", workers)])]
                        row.update(ref_img_s=round(statistics.median(peer), 2),
                                   speedup_vs_ref=round(statistics.median(ratios), 3),
                                   speedup_rounds=[round(v, 3) for v in ratios],
                                   cpu_speedup_vs_ref=round(statistics.median(cpu_ratios), 3))
                    emit(**row)
        if args.compare:
            for cache, goal in GOALS.items():
                for workers in [w for w in [int(w) for w in args.workers.split(",")] if w == 2]:
                    mine, peer = rates.get(("ours", cache, workers)), rates.get(("peer", "none", workers))
                    if not (mine and peer):
                        continue
                    ratio = statistics.median(a / b for a, b in zip(mine, peer))
                    cpu = statistics.median(b / a for a, b in zip(cpus[("ours", cache, workers)],
                                                                  cpus[("peer", "none", workers)]))
                    emit(bench="yolox_data_targets", target=f"ours cache={cache} vs released, {workers} workers",
                         goal=goal, measured=round(ratio, 3), status="met" if ratio >= goal else "missed",
                         cpu_time_ratio=round(cpu, 3))
            profiles = {}
            for _ in range(args.rounds):          # alternating, like the rates: a load change moves all
                for impl, path, caches in impls:
                    for cache in caches:
                        cfg = {**common, "impl": impl, "path_first": path, "mode": "profile",
                               "samples": args.profile_samples, "cache": None if cache == "none" else cache}
                        profiles.setdefault((impl, cache), []).append(run_child(cfg))
            for (impl, cache), runs in profiles.items():
                stages = {k: round(statistics.median(r["ms_per_img"][k] for r in runs), 3)
                          for k in runs[0]["ms_per_img"]}
                emit(bench="yolox_data_profile", impl=impl, cache=cache, size=args.size, rounds=len(runs),
                     ms_per_img=stages, total_ms_per_img=round(sum(stages.values()), 2),
                     wall_ms_per_img_rounds=[r["wall_ms_per_img"] for r in runs])
            pss = {}
            for cache in ("ram", None):
                cfg = {**common, "impl": "ours", "path_first": impls[0][1], "mode": "pss",
                       "batches": args.pss_batches, "cache": cache}
                pss[cache] = run_child(cfg)
            with_cache, without = pss["ram"], pss[None]
            added = with_cache["pss_mb"] - without["pss_mb"]
            ratio = added / with_cache["cache_mb"] if with_cache["cache_mb"] else None
            emit(bench="yolox_data_pss", workers=with_cache["workers"], cache_mb=with_cache["cache_mb"],
                 pss_mb=with_cache["pss_mb"], pss_nocache_mb=without["pss_mb"], pss_added_mb=round(added, 1),
                 added_vs_cache=round(ratio, 3) if ratio is not None else None, goal=1.2,
                 cache_mapping_pss_mb=with_cache["cache_mapping_pss_mb"], pss_main_mb=with_cache["pss_main_mb"],
                 pss_main_nocache_mb=without["pss_main_mb"],
                 status=("met" if ratio is not None and ratio <= 1.2 else "missed"),
                 pss_worker_mb=with_cache["pss_worker_mb"], pss_worker_nocache_mb=without["pss_worker_mb"])


if __name__ == "__main__":
    main()
