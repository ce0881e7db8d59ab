"""Batch and stream inference in the demos (``detcore/deploy/media.py``): --batch-size gives the boxes of
batch 1; --save-txt writes YOLO labels of the printed boxes; --save-json writes COCO results
that pycocotools loadRes reads, with the annotation file's ids; --classes and --agnostic-nms
filter; a glob is a source; a stream that drops mid-way keeps its video, txt and json; a stream
URL that cannot be opened is one line; the PyTorch YOLOX and SSD demos batch alike."""
import builtins
import errno
import io
import json
import os
import re
import subprocess
import sys
from argparse import Namespace

import cv2
import numpy as np
import pytest

from detcore.deploy.media import Source
from test_onnx_e2e import ssd, val_images  # noqa: F401  (fixtures)
from yolox_tools import ROOT, SHAPES_EXP, detecting_nano, load_tool

pytest.importorskip("onnxruntime")
LINE = re.compile(r"^(\S+): (\d+) detections in ", re.M)


@pytest.fixture(scope="module")
def nano160(shapes_coco, tmp_path_factory):
    """(checkpoint, raw .onnx with a dynamic batch) of the shapes YOLOX-nano at 160 that detects."""
    from detcore.training.checkpoints import save_atomic

    _, model = detecting_nano(sorted((shapes_coco / "val2017").glob("*.jpg")), 160)
    folder = tmp_path_factory.mktemp("demo_batch")
    save_atomic({"model": model.state_dict()}, folder / "nano.pth")
    load_tool("export_onnx").main(["-f", SHAPES_EXP, "-c", str(folder / "nano.pth"), "--dynamic",
                                   "--output-name", str(folder / "nano.onnx"), "test_size", "160,160"])
    return folder / "nano.pth", folder / "nano.onnx"


def run_demo(argv, capsys):
    load_tool("demo").main(argv)
    return capsys.readouterr().out


def saved(out_root):
    """(predictions.json content, {stem: txt rows}) under the one vis_res/<timestamp> folder."""
    folders = sorted(out_root.rglob("vis_res/*"))
    assert len(folders) == 1, folders
    labels = {p.stem: np.loadtxt(p, ndmin=2) for p in (folders[0] / "labels").glob("*.txt")}
    preds = folders[0] / "predictions.json"
    return (json.loads(preds.read_text()) if preds.is_file() else None), labels, folders[0]


def test_onnx_batch_8_equals_batch_1_and_txt_json_are_right(nano160, shapes_coco, tmp_path, capsys):
    from pycocotools.coco import COCO

    _, onnx_path = nano160
    val = shapes_coco / "val2017"
    ann = shapes_coco / "annotations" / "instances_val2017.json"
    common = ["image", "--onnx", str(onnx_path), "--conf", "0.3", "--nms", "0.45", "--save-txt", "--save-conf",
              "--save-json", "--ann", str(ann)]
    out1 = run_demo(common + ["--path", str(val), "--output_dir", str(tmp_path / "b1")], capsys)
    out8 = run_demo(common + ["--path", str(val), "--batch-size", "8", "--output_dir", str(tmp_path / "b8")], capsys)
    counts1, counts8 = LINE.findall(out1), LINE.findall(out8)
    assert len(counts1) == 12 and counts1 == counts8 and sum(int(n) for _, n in counts1) > 20
    json1, txt1, _ = saved(tmp_path / "b1")
    json8, txt8, _ = saved(tmp_path / "b8")
    assert txt1.keys() == txt8.keys() and len(json1) == len(json8) == sum(int(n) for _, n in counts1)
    for stem in txt1:
        np.testing.assert_allclose(txt1[stem], txt8[stem], atol=1e-4)
    # the json uses the annotation file's ids, and pycocotools reads it
    gt = COCO(str(ann))
    by_name = {im["file_name"]: im["id"] for im in gt.dataset["images"]}
    res = gt.loadRes(str(sorted((tmp_path / "b1").rglob("predictions.json"))[0]))
    assert len(res.getAnnIds()) == len(json1)
    assert {d["image_id"] for d in json1} <= set(by_name.values())
    assert {d["category_id"] for d in json1} <= set(gt.getCatIds())
    # the txt rows are the json boxes, normalised (class = index of the sorted category ids)
    cats = sorted(gt.getCatIds())
    first = next(iter(txt1))
    img_id = by_name[f"{first}.jpg"]
    h, w = gt.imgs[img_id]["height"], gt.imgs[img_id]["width"]
    mine = sorted([d for d in json1 if d["image_id"] == img_id], key=lambda d: -d["score"])
    rows = txt1[first][np.argsort(-txt1[first][:, 5], kind="stable")]
    for d, row in zip(mine, rows):
        x, y, bw, bh = d["bbox"]
        assert cats[int(row[0])] == d["category_id"]
        np.testing.assert_allclose(row[1:5], [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h], atol=1e-4)


def test_classes_agnostic_and_glob(nano160, shapes_coco, tmp_path, capsys):
    _, onnx_path = nano160
    pattern = str(shapes_coco / "val2017" / "*00[0-1]*.jpg")
    base = ["image", "--onnx", str(onnx_path), "--path", pattern, "--conf", "0.3", "--nms", "0.45", "--save-txt"]
    run_demo(base + ["--output_dir", str(tmp_path / "all")], capsys)
    run_demo(base + ["--classes", "1", "--output_dir", str(tmp_path / "one")], capsys)
    run_demo(base + ["--agnostic-nms", "--output_dir", str(tmp_path / "agn")], capsys)
    _, all_txt, _ = saved(tmp_path / "all")
    _, one_txt, _ = saved(tmp_path / "one")
    _, agn_txt, _ = saved(tmp_path / "agn")
    every = np.concatenate(list(all_txt.values()))
    assert len(set(every[:, 0].tolist())) > 1                        # several classes without --classes
    only = np.concatenate(list(one_txt.values()))
    assert set(only[:, 0].tolist()) == {1} and len(only) == (every[:, 0] == 1).sum()
    assert sum(map(len, agn_txt.values())) < len(every)              # across classes more boxes overlap


class DroppingCapture:
    """A stream that delivers ``good`` frames, then fails as a dropped network stream does."""

    def __init__(self, frames, good):
        self.frames, self.good, self.k = frames, good, 0

    def read(self):
        if self.k >= self.good:
            raise cv2.error("stream dropped")
        self.k += 1
        return True, self.frames[self.k - 1].copy()

    def get(self, prop):
        return 5.0

    def release(self):
        pass


def test_a_stream_that_drops_keeps_what_was_saved(nano160, shapes_coco, tmp_path, capsys):
    from detcore.deploy.runtime import Detector

    _, onnx_path = nano160
    frames = [cv2.resize(cv2.imread(str(p)), (320, 256)) for p in sorted((shapes_coco / "val2017").glob("*.jpg"))]
    source = Source("stream", cap=DroppingCapture(frames, good=7), label="rtsp://camera.local/live")
    detector = Detector(onnx_path, conf=0.3, nms=0.45)
    args = Namespace(batch_size=3, save_result=True, save_txt=True, save_conf=False, save_json=True, ann=None)
    from yolox.tools.demo import run

    run(args, source, detector.detect_batch, detector.names, tmp_path / "vis_res" / "t")
    out = capsys.readouterr().out
    assert "rtsp://camera.local/live: the stream stopped delivering frames after 7" in out
    assert "saved the annotated video (7 frames)" in out
    video = cv2.VideoCapture(str(tmp_path / "vis_res" / "t" / "stream.mp4"))
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 7
    preds = json.loads((tmp_path / "vis_res" / "t" / "predictions.json").read_text())
    assert {d["image_id"] for d in preds} <= set(range(7)) and len(preds) > 0
    assert len(list((tmp_path / "vis_res" / "t" / "labels").glob("stream_*.txt"))) > 0


def test_unopenable_stream_url_is_one_line(nano160, tmp_path):
    _, onnx_path = nano160
    url = "http://127.0.0.1:9/live.mjpg"                 # the discard port: connection refused at once
    for argv in (["video", "--onnx", str(onnx_path), "--path", url],
                 ["image", "--onnx", str(onnx_path), "--path", str(tmp_path / "none*.jpg")]):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), *argv], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --path "), proc.stderr


def read_only(monkeypatch, folder):
    """Make ``folder`` behave as a read-only mount (tests run as root, where chmod stops no write):
    creating a folder or opening a file for writing under it fails with EROFS."""
    root = os.path.abspath(folder)

    def inside(path):
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(root + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_mkdir, real_os_open, real_io_open = os.mkdir, os.open, io.open
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: refuse(p) if inside(p) else real_mkdir(p, *a, **k))
    monkeypatch.setattr(os, "open", lambda p, flags, *a, **k: refuse(p) if inside(p) and flags & (
        os.O_WRONLY | os.O_RDWR | os.O_CREAT) else real_os_open(p, flags, *a, **k))
    writing = lambda p, mode="r", *a, **k: (refuse(p) if inside(p) and set(mode) & set("wax+")  # noqa: E731
                                            else real_io_open(p, mode, *a, **k))
    monkeypatch.setattr(io, "open", writing)
    monkeypatch.setattr(builtins, "open", writing)


@pytest.mark.parametrize("flag", ["--save-json", "--save-txt", "--save_result"])
def test_read_only_output_folder_is_one_line_before_inference(nano160, shapes_coco, tmp_path, monkeypatch,
                                                             capsys, flag):
    """An output folder that cannot be written is one ``error:`` line before the first image goes
    through the network, not a traceback after every prediction was made (and lost)."""
    _, onnx_path = nano160
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(monkeypatch, ro)
    with pytest.raises(SystemExit) as stop:
        load_tool("demo").main(["image", "--onnx", str(onnx_path), "--path", str(shapes_coco / "val2017"),
                                "--conf", "0.3", flag, "--output_dir", str(ro)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot create the output folder {ro}{os.sep}") and \
        lines[0].endswith("the file system is read-only"), lines[0]
    assert not LINE.search(out)                          # no image went through the network


def test_json_rows_are_written_as_they_come(nano160, shapes_coco, tmp_path, capsys):
    """--save-json appends each image's rows to predictions.json.partial as it goes (a run killed
    mid-way keeps them), and the final predictions.json is the same list, the partial file gone."""
    from detcore.deploy.media import open_source
    from detcore.deploy.runtime import Detector
    from yolox.tools.demo import run

    _, onnx_path = nano160
    detector = Detector(onnx_path, conf=0.3, nms=0.45)
    out_dir = tmp_path / "vis_res" / "t"
    partial = out_dir / "predictions.json.partial"
    seen = []

    def predict(images):
        seen.append(len(partial.read_text().splitlines()) if partial.is_file() else None)
        return detector.detect_batch(images)

    args = Namespace(batch_size=4, save_result=False, save_txt=False, save_conf=False, save_json=True, ann=None)
    run(args, open_source(str(shapes_coco / "val2017")), predict, detector.names, out_dir)
    final = json.loads((out_dir / "predictions.json").read_text())
    assert seen[0] == 0 and all(n is not None for n in seen) and seen == sorted(seen) and 0 < seen[-1] < len(final)
    assert not partial.exists() and len(final) > 0


def test_pytorch_demos_batch_like_batch_1(nano160, shapes_coco, tmp_path, capsys):
    ckpt, _ = nano160
    val = shapes_coco / "val2017"
    base = ["image", "-f", SHAPES_EXP, "-c", str(ckpt), "--path", str(val), "--tsize", "160", "--conf", "0.3",
            "--nms", "0.45", "--device", "cpu", "--save-txt"]
    run_demo(base + ["output_dir", str(tmp_path / "y1")], capsys)
    run_demo(base + ["--batch-size", "5", "output_dir", str(tmp_path / "y5")], capsys)
    _, a, _ = saved(tmp_path / "y1")
    _, b, _ = saved(tmp_path / "y5")
    assert a.keys() == b.keys() and len(a) > 3
    for stem in a:       # the same boxes; two of near-equal score may be listed in either order
        np.testing.assert_allclose(_by_box(a[stem]), _by_box(b[stem]), rtol=1e-4, atol=1e-4)


def _by_box(rows):
    rows = np.atleast_2d(rows)
    return rows[np.lexsort(np.round(rows, 3).T[::-1])]


def test_ssd_demo_batches_and_writes_labels(ssd, shapes_coco, tmp_path, capsys):  # noqa: F811
    from ssd import demo as ssd_demo

    ckpt, _ = ssd                          # batch-norm statistics from val images: it detects
    src = sorted((shapes_coco / "val2017").glob("*.jpg"))[:3]
    outs = []
    for bs in ("1", "3"):
        ssd_demo.main(["-c", str(ckpt), "--path", str(src[0].parent / "00000000000[1-3].jpg"), "--batch-size", bs,
                       "--save-txt", "--output-dir", str(tmp_path / bs), "--device", "cpu", "--conf", "0.3"])
        outs.append({p.stem: np.loadtxt(p, ndmin=2) for p in (tmp_path / bs / "labels").glob("*.txt")})
    capsys.readouterr()
    assert outs[0].keys() == outs[1].keys() and len(outs[0]) > 0
    for stem in outs[0]:
        np.testing.assert_allclose(outs[0][stem], outs[1][stem], atol=1e-4)
        assert set(outs[0][stem][:, 0].tolist()) <= {0, 1, 2, 3}      # YOLO classes: labels 1..4 minus 1
