"""The training augmentation is the released YOLOX 0.3.0's in distribution (issue 33 item 6): ours
was rebuilt for speed (visible-part mosaic, composed warps, LUT HSV, caches), so its boxes are
compared with the released pipeline's, both drawn here from the same generated COCO set.

The released pipeline comes from PyPI at test time: ``pip download yolox==0.3.0`` (its sdist; only
PyPI is reachable in CI) with its two pure-Python import-time dependencies (thop, tqdm), each
checked against its sha256, unpacked into a temporary folder and imported in a SUBPROCESS with that
folder first on ``sys.path``, so it can never meet our own ``yolox`` package. Its data modules are
plain Python (no C extension is built). ``YOLOX030_PATH`` (as bench/yolox_data.py) may name an
unpacked copy instead: its source folder, then its dependencies' folder, ``os.pathsep``-separated.

The test: 2,000 samples of the YOLOX-S recipe (mosaic 1.0, MixUp 1.0, degrees 10, translate 0.1,
mosaic scale (0.1, 2), MixUp scale (0.5, 1.5), shear 2, HSV, flip 0.5) from each pipeline with
fixed, different seeds. Per sample: the number of boxes, and ONE box picked at random (a seeded
generator) for its centre x, centre y, width and height normalised by the input size, so every
statistic is a sample of independent draws, as a two-sample Kolmogorov-Smirnov test assumes
(boxes of one mosaic are not independent of each other). Five KS tests at 1% / 5 each (Bonferroni:
1% for the family). One deliberate difference is put into the released pipeline first
(``DROP_SLIVERS``): with it the p-values were 0.01-0.94 over three seed pairs (2,000 and 4,000
samples), without it a 4,000-sample all-boxes test saw the phantom boxes (p 0.013 for cy, w, h).
Power: the same test on ours with mosaic scale (0.5, 1.5) instead of (0.1, 2) must reject; it
does for the count (p ~1e-6), cy (~1e-7) and w (~1e-5) at these seeds.

Why 160 px is valid: every random parameter of the recipe is relative to the input size (mosaic
centre in [0.5, 1.5] x size, translation 0.1 x size, scale and MixUp jitter factors, crop offsets
within the jittered size), so the normalised box distributions do not depend on it; what does
(integer truncations, the > 1 px box filters) is the same code at the same size in both pipelines,
and at a small size those pixel effects weigh MORE, so differences there are easier to see.
"""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from conftest import load_make_shapes

SIZE, SAMPLES, ALPHA = 160, 2000, 0.01
STATS = ("count", "cx", "cy", "w", "h")
PYPI = {  # file name -> sha256, as PyPI serves them
    "yolox-0.3.0.tar.gz": "1b8ee68846434408c40074f0806259fe3b9387181e562dbc435ea666533d8d08",
    "thop-0.1.1.post2209072238-py3-none-any.whl": "01473c225231927d2ad718351f78ebf7cffe6af3bed464c4f1ba1ef0f7cdda27",
    "tqdm-4.70.1-py3-none-any.whl": "c293e525e6fef9c20e8728fd4612df02a0aa31bb5fe91ecd93e123b1b7bffa73",
}

# Run in both pipelines (ours in this process, the released one in a subprocess): the recipe,
# sequential indices, global seeds, the padded (cls, cx, cy, w, h) targets as they come out.
DRAW = '''
def draw(data, data_dir, size, samples, seed, mosaic_scale=(0.1, 2), cache=False):
    import random
    import numpy as np
    coco = data.COCODataset(data_dir, json_file="instances_train2017.json", name="train2017",
                            img_size=(size, size), cache=cache)
    ds = data.MosaicDetection(coco, (size, size), True,
                              data.TrainTransform(max_labels=120, flip_prob=0.5, hsv_prob=1.0),
                              degrees=10.0, translate=0.1, mosaic_scale=tuple(mosaic_scale),
                              mixup_scale=(0.5, 1.5), shear=2.0, enable_mixup=True,
                              mosaic_prob=1.0, mixup_prob=1.0)
    random.seed(seed)
    np.random.seed(seed)
    return np.stack([ds[(True, k % len(coco))][1] for k in range(samples)])
'''

# The one deliberate difference, applied to the released pipeline before it is compared: a box the
# mosaic canvas edge cuts to <= 1 px is dropped before the affine warp (ours: MosaicDetection.mosaic),
# where 0.3.0 warps it, and a rotated 1 x 50 px sliver comes out as a ~9 x 50 px box with nothing
# in it. Without this, those phantom boxes (about 2% of all boxes at 160 px, mostly near the top
# edge, which every scale sees) are what a larger test finds.
DROP_SLIVERS = '''
import numpy as np
import yolox.data.datasets.mosaicdetection as released_mosaic
_released_affine = released_mosaic.random_affine
def random_affine(img, targets=(), *args, **kwargs):
    if len(targets):
        targets = targets[np.minimum(targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]) > 1]
    return _released_affine(img, targets, *args, **kwargs)
released_mosaic.random_affine = random_affine
'''


def released_source(tmp):
    """Folders to put first on sys.path for the released YOLOX 0.3.0 (see the module docstring)."""
    given = [d for d in os.environ.get("YOLOX030_PATH", "").split(os.pathsep) if d]
    if given and (Path(given[0]) / "yolox" / "__init__.py").is_file():
        return given
    dl = tmp / "pypi"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dl)]
    # the sdist: pip reads its metadata with setup.py, which imports torch: no build isolation
    sdist = subprocess.run(cmd + ["--no-binary", ":all:", "--no-build-isolation", "yolox==0.3.0"],
                           capture_output=True, text=True)
    wheels = subprocess.run(cmd + ["--only-binary", ":all:", "thop==0.1.1.post2209072238", "tqdm==4.70.1"],
                            capture_output=True, text=True)
    if sdist.returncode or wheels.returncode:
        tail = (sdist.stderr if sdist.returncode else wheels.stderr).strip().splitlines()[-3:]
        try:                                  # no network: skip; PyPI reachable but pip failed: fail
            urllib.request.urlopen("https://pypi.org/simple/yolox/", timeout=10).close()
        except OSError as exc:
            pytest.skip(f"PyPI is not reachable ({exc}), so the released YOLOX 0.3.0 cannot be fetched")
        pytest.fail(f"pip could not fetch the released YOLOX 0.3.0 from PyPI: {tail}")
    for name, digest in PYPI.items():
        assert hashlib.sha256((dl / name).read_bytes()).hexdigest() == digest, f"{name} is not PyPI's file"
    src, deps = tmp / "yolox-0.3.0", tmp / "deps"
    with tarfile.open(dl / "yolox-0.3.0.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("yolox-0.3.0/yolox/")]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}   # Python >= 3.11.4 / 3.12
        tar.extractall(tmp, members=members, **safe)
    for name in PYPI:
        if name.endswith(".whl"):
            zipfile.ZipFile(dl / name).extractall(deps)
    return [str(src), str(deps)]


def released_targets(path_first, data_dir, seed, tmp):
    out = tmp / f"released_{seed}.npy"
    code = (f"import sys; sys.path[:0] = {path_first!r}\n"
            "import numpy as np, yolox, yolox.data as data\n"
            "assert yolox.__version__ == '0.3.0' and yolox.__file__.startswith(sys.path[0]), yolox.__file__\n"
            + DROP_SLIVERS + DRAW +
            f"np.save({str(out)!r}, draw(data, {str(data_dir)!r}, {SIZE}, {SAMPLES}, {seed}, cache=True))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out)


def our_targets(data_dir, seed, **kw):
    import yolox.data as data
    scope = {}
    exec(DRAW, scope)
    return scope["draw"](data, data_dir, SIZE, SAMPLES, seed, cache="ram", **kw)


def statistics(targets, seed):
    """Per sample: its box count and one of its boxes (seeded pick), normalised by the input size."""
    real = (targets[:, :, 3] > 0) | (targets[:, :, 4] > 0)
    counts = real.sum(axis=1)
    have = np.flatnonzero(counts)
    nth = np.random.default_rng(seed).integers(0, counts[have])      # which of the sample's boxes
    slot = np.argmax(real[have].cumsum(axis=1) == (nth + 1)[:, None], axis=1)
    boxes = targets[have, slot, 1:5] / SIZE
    return {"count": counts, "cx": boxes[:, 0], "cy": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3]}


def ks_pvalues(a, b):
    return {k: float(ks_2samp(a[k], b[k]).pvalue) for k in STATS}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return load_make_shapes()(tmp_path_factory.mktemp("dist_shapes"), num_train=40, num_val=0, seed=5)


def test_box_distributions_match_the_released_pipeline(data_dir, tmp_path):
    path_first = released_source(tmp_path)
    released = statistics(released_targets(path_first, data_dir, seed=1, tmp=tmp_path), seed=11)
    ours = statistics(our_targets(data_dir, seed=2), seed=12)
    level = ALPHA / len(STATS)
    same = ks_pvalues(ours, released)
    assert min(same.values()) > level, f"ours differs from the released pipeline: KS p-values {same}"
    # power: a changed recipe (mosaic scale (0.5, 1.5) instead of (0.1, 2)) must be told apart
    narrower = statistics(our_targets(data_dir, seed=3, mosaic_scale=(0.5, 1.5)), seed=13)
    changed = ks_pvalues(narrower, released)
    assert min(changed.values()) < level, f"the test cannot see a changed scale range: KS p-values {changed}"
    print(json.dumps({"same": same, "scale_0.5_1.5": changed}))
