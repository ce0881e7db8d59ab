"""Reliability: one line for every failure a user can meet, nothing lost, nothing silently wrong."""
import errno
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detcore.training import checkpoints as checkpoint
from accel.errors import UserError, cli_entry, report_position
from detcore.training.toolbox import RunLock
from ssd.data import CocoDetection
from yolox.exp import get_exp


def run_cli(fn, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_entry(fn)()
    return exc.value.code, capsys.readouterr().err.strip().splitlines()


def test_ctrl_c_is_one_line_with_the_position(capsys):
    report_position(lambda: "epoch 3, iteration 250; latest checkpoint out/latest_ckpt.pth")

    def main():
        raise KeyboardInterrupt

    code, err = run_cli(main, capsys)
    assert code == 130
    assert err == ["interrupted at epoch 3, iteration 250; latest checkpoint out/latest_ckpt.pth"]


def test_worker_failure_prints_the_root_cause(capsys):
    def main():
        raise ValueError("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback "
                         "(most recent call last):\n  File \"x.py\", line 3, in f\n    g()\n"
                         "ValueError: bad box in annotation 17")

    code, err = run_cli(main, capsys)
    assert code == 1 and err == ["error: a data-loader worker failed: ValueError: bad box in annotation 17"]

    def user_error_in_worker():
        raise UserError("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most "
                        "recent call last):\n  File \"d.py\", line 1\naccel.errors.UserError: most images "
                        "under /d cannot be decoded (3 of 4, e.g. /d/a.jpg)")

    code, err = run_cli(user_error_in_worker, capsys)
    assert code == 2 and err == ["error: most images under /d cannot be decoded (3 of 4, e.g. /d/a.jpg)"]


def test_collective_failure_is_one_line(capsys, monkeypatch):
    from accel import errors

    def hard_exit(code):                # the real one (os._exit) would end pytest too
        raise SystemExit(code)

    monkeypatch.setattr(errors, "_hard_exit", hard_exit)

    def main():
        raise torch.distributed.DistBackendError("[Rank 0] Timed out after 3 s\nlong\ntrace")

    code, err = run_cli(main, capsys)
    assert code == 1 and len(err) == 1 and "exceeded --dist-timeout" in err[0] and "Timed out" in err[0]


@pytest.mark.parametrize("code,reason", [(errno.ENOSPC, "the disk is full"),
                                         (errno.EROFS, "the file system is read-only")])
def test_full_disk_or_read_only_keeps_the_previous_file(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "latest_ckpt.pth"
    checkpoint.save_atomic({"v": torch.tensor(1)}, path)

    def refuse(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(UserError) as err:
        checkpoint.save_atomic({"v": torch.tensor(2)}, path)
    assert str(err.value) == f"cannot write {path}: {reason} (the previous file, if any, is intact)"
    assert checkpoint.load(path)["v"] == 1 and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_text_file_as_checkpoint_is_one_line(tmp_path, capsys, shapes_coco):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    expected = f"checkpoint {text} is not a torch checkpoint (neither torch.save's zip format nor a pickle)"
    with pytest.raises(UserError) as info:
        checkpoint.load(text)
    assert str(info.value) == expected
    from ssd import train as ssd_train
    code, err = run_cli(lambda: ssd_train.main(["-d", str(shapes_coco), "--checkpoint", str(text),
                                                "--output-dir", str(tmp_path / "o"), "--num-workers", "0", "-b", "4"]),
                        capsys)
    err = [ln for ln in err if " | " not in ln]            # the log lines before it
    assert code == 2 and err == [f"error: {expected}"]
    from yolox_tools import load_tool
    code, err = run_cli(lambda: load_tool("pth_to_pickle").main([str(text)]), capsys)
    assert code == 2 and err == [f"error: {expected}"]


def test_second_live_run_on_the_same_output_dir_stops(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / RunLock.NAME).write_text(str(sleeper.pid))
        with pytest.raises(UserError, match=f"in use by a live run \\(PID {sleeper.pid}\\)"):
            RunLock(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = RunLock(tmp_path)                       # the sleeper is gone: a stale lock is taken over
    assert (tmp_path / RunLock.NAME).read_text() == str(os.getpid())
    lock.release()
    assert not (tmp_path / RunLock.NAME).exists()


def write_coco(root, images, anns, cats=({"id": 1, "name": "a"}, {"id": 2, "name": "b"})):
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for name, h, w in images:
        cv2.imwrite(str(root / "imgs" / name), np.full((h, w, 3), 128, np.uint8))
    data = {"images": [{"id": i + 1, "file_name": n, "height": h, "width": w} for i, (n, h, w) in enumerate(images)],
            "annotations": [{"id": k + 1, **a} for k, a in enumerate(anns)], "categories": list(cats)}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "imgs", root / "ann.json"


def test_ssd_data_policy_clips_first_and_drops_zero_area(tmp_path, log_lines):
    anns = [{"image_id": 1, "category_id": 1, "bbox": [200, 10, 20, 20]},    # wholly right of the image
            {"image_id": 1, "category_id": 2, "bbox": [-10, -10, 30, 40]},   # clipped to [0, 0, 20, 30]
            {"image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 8]}]         # zero width
    img_dir, ann = write_coco(tmp_path, [("a.jpg", 50, 100)], anns)
    ds = CocoDetection(img_dir, ann, train=True)
    boxes, labels = ds.targets[1]
    np.testing.assert_allclose(boxes, [[0, 0, 0.2, 0.6]], rtol=1e-6)
    assert labels.tolist() == [2]
    assert [ln for ln in log_lines if "clipped" in ln] == [
        "ann.json: clipped 1 boxes to their image and dropped 2 with zero area after clipping (of 3)"]


def test_ssd_unknown_category_names_file_and_id(tmp_path):
    img_dir, ann = write_coco(tmp_path, [("a.jpg", 50, 100)], [{"image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(UserError, match=f"annotation file {ann}: category_id 9 is not in its categories \\[1, 2\\]"):
        CocoDetection(img_dir, ann, train=True)


def test_ssd_skips_an_unreadable_image(tmp_path, log_lines):
    anns = [{"image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in (1, 2, 3)]
    img_dir, ann = write_coco(tmp_path, [("a.jpg", 40, 40), ("b.jpg", 40, 40), ("c.jpg", 40, 40)], anns)
    (img_dir / "b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    ds = CocoDetection(img_dir, ann, train=False)
    assert ds[1][3] == 3                                   # b.jpg unreadable -> the next image
    assert any("skipping unreadable image" in ln and "b.jpg" in ln for ln in log_lines)


def test_yolox_decoding_cannot_produce_infinite_boxes():
    from yolox.models.yolo_head import YOLOXHead
    raw = torch.tensor([[[0.0, 0.0, 500.0, 90.0, 0.0]]])
    boxes = YOLOXHead.decode(raw, torch.zeros(1, 2), torch.full((1,), 32.0))
    assert torch.isfinite(boxes).all()
    normal = torch.tensor([[[0.5, 0.5, 1.0, -1.0, 0.0]]])
    np.testing.assert_allclose(YOLOXHead.decode(normal, torch.zeros(1, 2), torch.full((1,), 8.0))[0, 0, :4],
                               [4.0, 4.0, 8 * np.e, 8 / np.e], rtol=1e-6)


@pytest.mark.parametrize("opts,msg", [(["max_epoch", "-1"], "max_epoch '-1': must be >= 1"),
                                      (["eval_interval", "0"], "eval_interval '0': must be >= 1"),
                                      (["input_size", "320,330"], "multiples of 32"),
                                      (["input_size", "0,320"], "must be >= 32"),
                                      (["mosaic_prob", "1.5"], "must be in \\[0.0, 1.0\\]")])
def test_override_ranges(opts, msg):
    with pytest.raises(UserError, match=msg):
        get_exp(exp_name="yolox-nano").merge(opts)


def test_yolox_non_finite_loss_stops_naming_iteration_and_checkpoint(tmp_path):
    from pathlib import Path

    from yolox.core.trainer import Trainer
    trainer = Trainer.__new__(Trainer)
    trainer.epoch, trainer.iter, trainer.max_iter = 2, 4, 10
    trainer.file_name = Path(tmp_path)
    trainer._last_outputs = {"total_loss": torch.tensor(float("nan")), "iou_loss": torch.tensor(1.0)}
    with pytest.raises(UserError) as err:
        trainer.after_epoch()              # checked before anything is evaluated or saved
    assert str(err.value).startswith("non-finite loss {'total_loss': nan} at epoch 3, iteration 25; "
                                      f"last good checkpoint: {tmp_path / 'latest_ckpt.pth'}")
    trainer._last_outputs = {"total_loss": torch.tensor(2.5)}
    assert trainer.check_finite() == {"total_loss": 2.5}


def test_torch_zip_writer_failure_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """torch.save's zip writer reports a full disk as a RuntimeError, not an OSError."""
    def full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 945152 vs 945048")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(UserError, match="the write failed, most likely the disk is full"):
        checkpoint.save_atomic({}, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []              # no temp file left behind


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch):
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(UserError) as err:
        RunLock(tmp_path / "out")
    assert str(err.value) == f"cannot create the output folder {tmp_path / 'out'}: the file system is read-only"
