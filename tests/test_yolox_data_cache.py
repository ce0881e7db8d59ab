"""``--cache ram|disk`` (yolox.data.cache) and the mosaic's faster construction (issue 33 item 6):
the cached pixels are the uncached ones, the RAM cache is one buffer the loader workers share (not
copy), the disk cache is written atomically and reused, and building only the visible part of the
mosaic, from cached or decoded images, changes no label."""
import errno
import os
import pickle
import random

import cv2
import numpy as np
import pytest
import torch

from accel.errors import UserError, cli_entry
from conftest import load_make_shapes
from yolox.data import (COCODataset, DataLoader, MosaicDetection, TrainTransform, YoloBatchSampler,
                        worker_init_reset_seed)
from yolox.data import cache as cache_mod
from yolox.data.dataloading import as_float, collate
from yolox.data.datasets.mosaicdetection import paint, visible_region

SIZE = (96, 128)


@pytest.fixture
def shapes(tmp_path):
    """A writable generated set (the disk cache goes beside its images)."""
    return load_make_shapes()(tmp_path / "shapes", num_train=10, num_val=0, seed=3)


def all_images(ds):
    return [ds.pull_item(i)[0] for i in range(len(ds))]


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_cached_pixels_are_the_uncached_ones(shapes, kind):
    plain = COCODataset(shapes, img_size=SIZE)
    cached = COCODataset(shapes, img_size=SIZE, cache=kind)
    for a, b in zip(all_images(plain), all_images(cached)):
        np.testing.assert_array_equal(a, b)
    img = cached.pull_item(0)[0]
    img[:] = 0                                          # callers may augment in place ...
    assert cached.pull_item(0)[0].any()                 # ... without touching the cache
    if kind == "ram":
        view, _, _ = cached.read_source(0)
        assert not view.flags.writeable                 # the mosaic reads the shared buffer itself


def test_ram_cache_is_one_buffer_shared_with_forked_workers(shapes):
    """A write to the buffer after the workers forked is seen by them: the pages are shared, not
    copied on write (a plain numpy array, or a list of them, would show the workers the old bytes)."""
    ds = COCODataset(shapes, img_size=SIZE, cache=True)
    cache = ds.cache
    assert isinstance(cache, cache_mod.RamImageCache) and cache.nbytes == int((ds._resized.prod(1) * 3).sum())

    class FirstPixel(torch.utils.data.Dataset):
        def __len__(self):
            return 1_000_000

        def __getitem__(self, i):
            return int(ds.read_source(0)[0][0, 0, 0])

    loader = DataLoader(FirstPixel(), batch_size=1, num_workers=1, persistent_workers=True,
                        multiprocessing_context="fork")
    it = iter(loader)
    before = int(next(it))
    cache._map[0] = (before + 77) % 256                 # the first byte of image 0, written by the parent
    seen = [int(next(it)) for _ in range(4)]            # (a batch or two may have been made before)
    assert seen[-1] == (before + 77) % 256
    del it, loader
    with pytest.raises(UserError, match="shared with fork"):
        pickle.dumps(cache)


def test_disk_cache_is_written_once_atomically_and_refreshed_when_stale(shapes, log_lines):
    cached = COCODataset(shapes, img_size=SIZE, cache="disk")
    folder = cache_mod.default_disk_folder(shapes / "train2017", SIZE)
    assert cached.cache.folder == folder == shapes / f"img_resized_cache_train2017_{SIZE[0]}x{SIZE[1]}"
    files = sorted(folder.iterdir())
    assert len(files) == len(cached) and all(f.suffix == ".npy" for f in files)   # no temporary left
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = COCODataset(shapes, img_size=SIZE, cache="disk")
    assert {f: f.stat().st_mtime_ns for f in files} == stamps                      # nothing rewritten
    assert any(f"{len(files)} of {len(files)} images" in ln and "writing 0" in ln for ln in log_lines)
    np.testing.assert_array_equal(again.pull_item(3)[0], COCODataset(shapes, img_size=SIZE).pull_item(3)[0])

    files[0].write_bytes(files[0].read_bytes()[:-10])                             # cut short
    img_file = shapes / "train2017" / cached._table.file_name_at(1)
    os.utime(img_file, ns=(stamps[files[1]] + 10**9, stamps[files[1]] + 10**9))   # image newer
    COCODataset(shapes, img_size=SIZE, cache="disk")
    assert any("writing 2 " in ln for ln in log_lines)

    other = shapes / "mine"
    named = COCODataset(shapes, img_size=SIZE, cache="disk", cache_dir=other)
    assert named.cache.folder == other and len(list(other.iterdir())) == len(named)


def test_unreadable_images_with_a_cache(shapes, log_lines):
    bad = shapes / "train2017" / COCODataset(shapes, img_size=SIZE)._table.file_name_at(2)
    bad.write_bytes(b"not a jpeg")
    for kind in ("ram", "disk"):
        ds = COCODataset(shapes, img_size=SIZE, cache=kind)
        assert ds.unreadable == {2}
        img, labels, _, img_id = ds.pull_item(2)                 # the next readable image stands in
        np.testing.assert_array_equal(img_id, ds.image_id(3))
        assert ds.read_source(2)[2] == 3 and ds.labels_of_readable(2)[1] == 3
    assert any("skipping unreadable image" in ln and bad.name in ln for ln in log_lines)


def test_bad_cache_arguments_are_one_line_errors(shapes, monkeypatch):
    with pytest.raises(UserError, match="--cache 'memory': expected 'ram'"):
        COCODataset(shapes, img_size=SIZE, cache="memory")
    monkeypatch.setattr(cache_mod, "_mem_available", lambda: 1000)
    with pytest.raises(UserError, match="--cache ram needs .* GiB .* use --cache disk"):
        COCODataset(shapes, img_size=SIZE, cache="ram")
    assert cache_mod.cache_kind(None) is None and cache_mod.cache_kind(True) == "ram"


def test_read_only_disk_cache_folder_is_one_cli_line(shapes, monkeypatch, capsys):
    """A cache folder that exists but cannot be written (read-only mount; as root chmod does not
    stop writes, so the temp file's creation fails as a read-only file system would): one
    ``error:`` line naming the folder and what to do, exit 2, not the writer thread's traceback."""
    folder = shapes / "cache_ro"
    folder.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", read_only)

    @cli_entry
    def main():
        COCODataset(shapes, img_size=SIZE, cache="disk", cache_dir=folder)

    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --cache disk: cannot write to the cache folder {folder} (the file system is "
                   "read-only): name a writable folder with the exp option cache_dir DIR, or use --cache ram"]


def test_warping_only_the_visible_region_equals_warping_the_whole_canvas():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (2 * SIZE[0], 2 * SIZE[1], 3), dtype=np.uint8)
    random.seed(0)
    from yolox.data.data_augment import get_affine_matrix
    for _ in range(50):
        mat = get_affine_matrix(SIZE[::-1], 10.0, 0.1, (0.1, 2), 2.0)
        whole = cv2.warpAffine(canvas, mat, SIZE[::-1], borderValue=(114,) * 3)
        region = visible_region(mat, SIZE[::-1], (2 * SIZE[1], 2 * SIZE[0]))
        x0, y0, x1, y1 = region
        shifted = mat.copy()
        shifted[:, 2] += mat[:, :2] @ np.array([x0, y0], dtype=np.float64)
        part = cv2.warpAffine(np.ascontiguousarray(canvas[y0:y1, x0:x1]), shifted, SIZE[::-1],
                              borderValue=(114,) * 3)
        assert np.abs(part.astype(int) - whole.astype(int)).max() <= 1


def test_paint_is_cv2_resize_placed_and_clipped():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    canvas = np.full((50, 70, 3), 114, np.uint8)
    paint(canvas, (10, 5, 80, 55), src, (60, 45), (15, 2))      # canvas = mosaic window x 10..80, y 5..55
    ref = np.full((100, 100, 3), 114, np.uint8)
    ref[2:47, 15:75] = cv2.resize(src, (60, 45), interpolation=cv2.INTER_LINEAR)
    assert np.abs(canvas.astype(int) - ref[5:55, 10:80].astype(int)).max() <= 1


class PullItemOnly:
    """The dataset seen only through ``pull_item`` (and ``load_anno``): MosaicDetection then builds
    the whole canvas from letterboxed images, as it always did."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def box_counts(self):
        return self.ds.box_counts()

    def pull_item(self, index):
        return self.ds.pull_item(index)


@pytest.mark.parametrize("cache", [None, "ram"])
def test_mosaic_from_visible_tiles_gives_the_same_labels(shapes, cache):
    """Same seeds, same draws: skipping tiles the affine does not see, painting decoded files in
    one warp (no cache) or cached arrays (ram) changes no label and the image only by interpolation;
    at scale 1.5-2 some tiles are not decoded at all."""
    base = COCODataset(shapes, img_size=SIZE, cache=cache)
    kw = dict(degrees=10.0, translate=0.1, mosaic_scale=(1.5, 2), mixup_scale=(0.5, 1.5), shear=2.0)
    fast = MosaicDetection(base, SIZE, preproc=TrainTransform(max_labels=120), **kw)
    slow = MosaicDetection(PullItemOnly(COCODataset(shapes, img_size=SIZE)), SIZE,
                           preproc=TrainTransform(max_labels=120), **kw)
    assert fast._fast and not slow._fast
    reads = []
    read_source = base.read_source
    base.read_source = lambda i: reads.append(i) or read_source(i)
    diffs = []
    for k in range(40):
        img_a, target_a, _, id_a = fast[(True, k % len(base), 100 + k)]
        img_b, target_b, _, id_b = slow[(True, k % len(base), 100 + k)]
        np.testing.assert_allclose(target_a, target_b, atol=1e-4)
        np.testing.assert_array_equal(id_a, id_b)
        diffs.append(np.abs(img_a.astype(int) - img_b.astype(int)).mean())
    assert np.mean(diffs) < 2.0
    assert len(reads) < 40 * 5 * 0.9                   # 4 tiles + 1 MixUp image each: some tiles skipped


def test_cached_loader_batches_through_workers(shapes):
    ds = MosaicDetection(COCODataset(shapes, img_size=SIZE, cache="ram"), SIZE,
                         preproc=TrainTransform(max_labels=30), mosaic_scale=(0.5, 1.5))
    sampler = YoloBatchSampler(torch.utils.data.RandomSampler(ds), batch_size=4, drop_last=False)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, worker_init_fn=worker_init_reset_seed)
    imgs, targets, _, _ = next(iter(loader))
    assert imgs.shape == (4, 3, *SIZE) and imgs.dtype == torch.uint8 and targets.shape == (4, 30, 5)
    assert (targets[..., 3:5] > 0).any()
    # the collate stacks TrainTransform's CHW views of HWC arrays as they lie: a channels_last batch
    assert imgs.is_contiguous(memory_format=torch.channels_last) and imgs.float().is_contiguous(
        memory_format=torch.channels_last)


def test_collate_makes_the_default_batch_in_channels_last_layout():
    rng = np.random.default_rng(2)
    hwc = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(3)]
    items = [(h.transpose(2, 0, 1), np.full((2, 5), k, np.float32), (6, 8), np.array([k])) for k, h in enumerate(hwc)]
    ours, plain = collate(items), torch.utils.data.default_collate(
        [(np.ascontiguousarray(i[0]), *i[1:]) for i in items])
    assert ours[0].is_contiguous(memory_format=torch.channels_last) and not ours[0].is_contiguous()
    torch.testing.assert_close(ours[0], plain[0])
    torch.testing.assert_close(ours[1], plain[1])
    # info and ids: numpy arrays (no shared-memory tensor each), the same values
    assert isinstance(ours[3], np.ndarray)
    assert isinstance(ours[2], list) and len(ours[2]) == 2          # [h, w] as default_collate's
    for mine, theirs in zip(ours[2], plain[2]):
        assert isinstance(mine, np.ndarray)
        np.testing.assert_array_equal(mine, theirs.numpy())
    np.testing.assert_array_equal(ours[3], plain[3].numpy())
    flipped = [(np.ascontiguousarray(i[0][:, :, ::-1]), *i[1:]) for i in items]    # plain CHW arrays
    assert collate(flipped)[0].is_contiguous()                                     # -> default_collate


def test_as_float_converts_the_channels_last_batch_into_one_reused_buffer():
    batch = collate([(np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3).transpose(2, 0, 1) + k,
                      np.zeros((2, 5), np.float32)) for k in range(2)])[0]
    images, buf = as_float(batch)
    assert images.dtype == torch.float32 and images.stride() == batch.stride()      # layout kept
    torch.testing.assert_close(images, batch.to(torch.float32), rtol=0, atol=0)
    again, buf2 = as_float(batch + 1, buf)
    assert buf2 is buf and again.data_ptr() == images.data_ptr()                   # no new buffer
    torch.testing.assert_close(again, (batch + 1).to(torch.float32), rtol=0, atol=0)
    other, buf3 = as_float(batch[:1].contiguous(), buf)                            # another shape: a new one
    assert buf3 is not buf and torch.equal(other, batch[:1].float())


def reference_mosaic(ds, idx):
    """Upstream's mosaic canvas, built the plain way: a full PAD canvas, each tile resized and pasted."""
    h, w = ds.input_dim
    yc, xc = int(random.uniform(0.5 * h, 1.5 * h)), int(random.uniform(0.5 * w, 1.5 * w))
    indices = [idx] + [random.randint(0, len(ds) - 1) for _ in range(3)]
    canvas = np.full((2 * h, 2 * w, 3), 114, np.uint8)
    for quadrant, index in enumerate(indices):
        img = ds._dataset.pull_item(index)[0]
        scale = min(h / img.shape[0], w / img.shape[1])
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)))
        ih, iw = img.shape[:2]
        ox = xc - iw if quadrant in (0, 2) else xc
        oy = yc - ih if quadrant in (0, 1) else yc
        x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + iw, 2 * w), min(oy + ih, 2 * h)
        canvas[y1:y2, x1:x2] = img[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
    return canvas


@pytest.mark.parametrize("cache", [None, "ram"])
def test_mosaic_canvas_is_the_plain_one_pad_where_no_tile_is(shapes, cache):
    """Only what no tile covers is filled: a hole left unfilled would show memory garbage."""
    ds = MosaicDetection(COCODataset(shapes, img_size=SIZE, cache=cache), SIZE, preproc=TrainTransform())
    for seed in range(12):
        random.seed(seed)
        canvas, _, _ = ds.mosaic(seed % len(ds))
        random.seed(seed)
        ref = reference_mosaic(ds, seed % len(ds))
        diff = np.abs(canvas.astype(int) - ref.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.3, (seed, diff.max(), diff.mean())
