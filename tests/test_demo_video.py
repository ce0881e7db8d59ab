"""tools/demo.py's input kinds beyond images, as upstream YOLOX's demo: `video --path FILE
--save_result` writes an annotated mp4 with the source's frame count, rate and size, through the
PyTorch checkpoint path and the --onnx path alike; a video that cannot be opened and a webcam that
does not exist end with one line (exit 2), before any model is loaded."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolox_tools import ROOT, SHAPES_EXP, detecting_nano, load_tool

FRAMES, FPS, SIZE = 6, 5.0, (320, 256)      # frames, rate, (width, height) of the test clip
NO_CAMERA = 63                              # a camera index no test machine has


def read_frames(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


@pytest.fixture(scope="module")
def clip(shapes_coco, tmp_path_factory):
    """A 6-frame mp4 (mp4v, 5 fps, 320x256) of shapes val images, written with cv2.VideoWriter."""
    path = tmp_path_factory.mktemp("clip") / "shapes_clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for img in sorted((shapes_coco / "val2017").glob("*.jpg"))[:FRAMES]:
        writer.write(cv2.resize(cv2.imread(str(img)), SIZE))
    writer.release()
    frames, _ = read_frames(path)
    assert len(frames) == FRAMES
    return path


@pytest.fixture(scope="module")
def nano(shapes_coco, tmp_path_factory):
    """(checkpoint, raw-map .onnx) of a 4-class YOLOX-nano at 160 that detects untrained."""
    from detcore.training.checkpoints import save_atomic

    _, model = detecting_nano(sorted((shapes_coco / "val2017").glob("*.jpg")), 160)
    folder = tmp_path_factory.mktemp("nano_video")
    save_atomic({"model": model.state_dict()}, folder / "nano.pth")
    load_tool("export_onnx").main(["-f", SHAPES_EXP, "-c", str(folder / "nano.pth"),
                                   "--output-name", str(folder / "nano.onnx"), "test_size", "160,160"])
    return folder / "nano.pth", folder / "nano.onnx"


def check_annotated(out_root, clip, stdout):
    """One annotated video under out_root/*/vis_res/<timestamp>/ with the clip's frame count, rate
    and size, every frame carrying boxes (strong colour changes against the source frame)."""
    written = sorted(Path(out_root).rglob(clip.name))
    assert len(written) == 1 and written[0].parent.parent.name == "vis_res", written
    assert f"({FRAMES} frames) to {written[0]}" in stdout
    source, _ = read_frames(clip)
    drawn, fps = read_frames(written[0])
    assert len(drawn) == FRAMES and fps == pytest.approx(FPS)
    assert drawn[0].shape[:2] == (SIZE[1], SIZE[0])
    for before, after in zip(source, drawn):
        changed = (np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 80).mean()
        assert changed > 0.005, changed          # re-encoding alone changes next to no pixel by 80
    counts = [int(line.split(": ")[1].split()[0]) for line in stdout.splitlines() if line.startswith("frame ")]
    assert len(counts) == FRAMES and min(counts) > 0, counts


def test_video_demo_with_a_checkpoint(nano, clip, tmp_path, capsys):
    ckpt, _ = nano
    load_tool("demo").main(["video", "-f", SHAPES_EXP, "-c", str(ckpt), "--path", str(clip), "--save_result",
                            "--conf", "0.25", "--nms", "0.45", "--tsize", "160", "--device", "cpu",
                            "output_dir", str(tmp_path)])
    check_annotated(tmp_path, clip, capsys.readouterr().out)


def test_video_demo_with_onnx(nano, clip, tmp_path, capsys):
    _, onnx_path = nano
    pytest.importorskip("onnxruntime")
    load_tool("demo").main(["video", "--onnx", str(onnx_path), "--path", str(clip), "--save_result",
                            "--conf", "0.25", "--nms", "0.45", "--output_dir", str(tmp_path)])
    check_annotated(tmp_path / "nano", clip, capsys.readouterr().out)


def test_video_demo_tracks_with_ids_trails_and_a_mot_file(nano, clip, tmp_path, capsys):
    """--track: the annotated video as without it, and one MOTChallenge result file for the clip
    whose rows are the frames' tracks (frames 1..6, positive ids, boxes inside the frame)."""
    from detcore.evaluation.tracking import read_mot_rows

    _, onnx_path = nano
    pytest.importorskip("onnxruntime")
    load_tool("demo").main(["video", "--onnx", str(onnx_path), "--path", str(clip), "--save_result", "--save-txt",
                            "--track", "--track-thresh", "0.2", "--conf", "0.25", "--nms", "0.45",
                            "--output_dir", str(tmp_path)])
    out = capsys.readouterr().out
    written = next((tmp_path / "nano").rglob(clip.name))
    drawn, fps = read_frames(written)
    assert len(drawn) == FRAMES and fps == pytest.approx(FPS) and f"({FRAMES} frames) to {written}" in out
    mot_file = next((tmp_path / "nano").rglob("labels/shapes_clip.txt"))
    rows = read_mot_rows(mot_file)
    assert f"saved {len(rows)} track rows of {FRAMES} frames (MOTChallenge) to {mot_file}" in out
    assert len(rows) > 0 and set(rows[:, 0]) <= set(range(1, FRAMES + 1)) and (rows[:, 1] >= 1).all()
    assert (rows[:, 2] > -SIZE[0]).all() and (rows[:, 4] > 0).all() and (rows[:, 7:] == -1).all()
    # the clip's frames are unrelated images: tracks start on frame 1 (confirmed at once on a
    # tracker's first frame) and ids are never reused within a frame; persistence across frames is
    # tests/test_tracker.py's
    assert (rows[:, 0] == 1).any()
    for f in range(1, FRAMES + 1):
        ids = rows[rows[:, 0] == f, 1]
        assert len(ids) == len(set(ids))


def test_unopenable_video_and_missing_camera_are_one_line(nano, tmp_path, capfd):
    """Through the real process (OpenCV and FFmpeg write to fd 2 themselves), --onnx path; and
    in-process on the checkpoint path, whose source check runs before the model loads."""
    if Path(f"/dev/video{NO_CAMERA}").exists():
        pytest.skip(f"this machine has /dev/video{NO_CAMERA}")
    ckpt, onnx_path = nano
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video\n")
    cases = [(["video", "--path", str(not_video)], f"--path {not_video}: OpenCV cannot open it as a video"),
             (["video", "--path", str(tmp_path / "gone.mp4")], f"--path {tmp_path / 'gone.mp4'} does not exist"),
             (["webcam", "--camid", str(NO_CAMERA)], f"--camid {NO_CAMERA}: no camera could be opened")]
    for argv, says in cases:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), *argv, "--onnx", str(onnx_path)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {says}"), proc.stderr
    demo = load_tool("demo")
    for argv, says in cases[::2]:
        with pytest.raises(SystemExit) as info:
            demo.main([*argv, "-f", SHAPES_EXP, "-c", str(tmp_path / "no_such.pth"), "--device", "cpu"])
        err = capfd.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {says}"), err


def test_api_track_yields_one_tracks_per_frame_from_a_video_or_frames(nano, clip):
    """yolox.api.Detector.track: a video path and the same frames as images give the same tracks."""
    from yolox.api import Detector

    ckpt, _ = nano
    det = Detector(SHAPES_EXP, ckpt=str(ckpt))
    from_video = list(det.track(clip, tsize=160, device="cpu", track_thresh=0.2))
    frames, _ = read_frames(clip)
    from_frames = list(det.track(frames, tsize=160, device="cpu", track_thresh=0.2, frame_rate=FPS))
    assert len(from_video) == len(from_frames) == FRAMES
    assert len(from_video[0]) > 0 and from_video[0].boxes.shape == (len(from_video[0]), 4)
    for a, b in zip(from_video, from_frames):
        assert np.array_equal(a.ids, b.ids) and np.allclose(a.boxes, b.boxes)
