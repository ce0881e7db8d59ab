"""ssd/train.py flags and bad input (exit 2, one `error:` line), lr schedule, tools/pth_to_pickle.py."""
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from ssd import train
from ssd.step import learning_rate
from yolox_tools import LOG_LINE

ROOT = Path(__file__).resolve().parents[1]




def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    # log lines (timestamped) may come first; everything else must be the one error line
    return exc.value.code, [ln for ln in err if not LOG_LINE.match(ln)]


def test_learning_rate_schedule_by_hand():
    lr = learning_rate
    assert lr(0, 1.0, 4, 0, [10, 20]) == 0.0  # MLPerf warm-up with factor 0 starts at zero
    assert lr(2, 1.0, 4, 0, [10, 20]) == 0.5
    assert lr(0, 1.0, 4, 1, [10, 20]) == 0.5  # factor 1 starts at half
    assert lr(4, 1.0, 4, 0, [10, 20]) == 1.0
    assert lr(10, 1.0, 4, 0, [10, 20]) == pytest.approx(0.1)
    assert lr(25, 1.0, 0, 0, [10, 20]) == pytest.approx(0.01)


def test_reference_flags_parse():
    args = train.build_parser().parse_args(
        ["-d", "x", "-b", "8", "--val-batch-size", "4", "-e", "3", "--lr", "0.01", "--weight-decay", "1e-4",
         "--warmup", "0.5", "--warmup-factor", "1", "--lr-decay-schedule", "44", "55", "--val-interval", "2",
         "--val-epochs", "1", "3", "--log-interval", "5", "--num-workers", "0", "-t", "0.5", "--no-save",
         "-s", "7", "--deterministic", "--batch-splits", "2", "--use-hpu", "--hpu-lazy-mode", "--autocast",
         "--dl-worker-type", "HABANA", "--iteration", "3", "--end-iteration", "9", "--nms-valid-thresh", "0.1",
         "--use-torch-compile", "--save-dir", "out"])
    assert (args.batch_size, args.val_batch_size, args.epochs, args.lr_decay_schedule) == (8, 4, 3, [44, 55])
    assert args.use_hpu and args.hpu_lazy_mode and args.autocast and args.dl_worker_type == "HABANA"
    assert (args.iteration, args.end_iteration, args.output_dir, args.threshold) == (3, 9, "out", 0.5)
    assert train.build_parser().parse_args(["-d", "x"]).threshold == 0.23


@pytest.mark.parametrize("extra, needle", [
    (["--batch-size", "3", "--batch-splits", "2"], "--batch-splits 2 must divide --batch-size 3"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--warmup", "-1"], "--warmup"),
    (["--trainable-backbone-layers", "5"], "--trainable-backbone-layers must be 0..4 (got 5)"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm must be > 0 (got 0.0)"),
])
def test_bad_flags_exit_2(tmp_path, capsys, extra, needle):
    code, err = run_main(["-d", str(tmp_path), *extra], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_missing_data_dir_exits_2(tmp_path, capsys):
    code, err = run_main(["-d", str(tmp_path / "nope"), "--no-save", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and err == [f"error: --data: {tmp_path / 'nope'} does not exist; expected a COCO root "
                                 "(annotations/instances_train2017.json, train2017/, val2017/), a VOC devkit "
                                 "(VOC<year>/Annotations, JPEGImages, ImageSets/Main), a YOLO data.yaml "
                                 "(or a folder holding one) or a MOT root (sequences with seqinfo.ini and "
                                 "img1/, in train/ or directly)"]


def test_empty_annotations_exit_2(tmp_path, capsys):
    for split in ("train2017", "val2017"):
        (tmp_path / split).mkdir()
    (tmp_path / "annotations").mkdir()
    empty = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    for split in ("train", "val"):
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(empty))
    code, err = run_main(["-d", str(tmp_path), "--no-save", "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and "instances_train2017.json has no images" in err[0]


def test_habana_loader_off_hpu_falls_back_with_one_line(monkeypatch):
    from loguru import logger
    from torch.utils.data import DataLoader

    from accel import policy
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        assert policy.loader_class("HABANA", "cpu") is DataLoader
        assert policy.loader_class("MP", "cpu") is DataLoader
    finally:
        logger.remove(sink)
    assert lines == ["--dl-worker-type HABANA needs --device hpu; using the torch DataLoader on cpu"]
    assert train.build_parser().parse_args(["-d", "x"]).dl_worker_type is None   # chosen in check_args


def load_pth_to_pickle():
    spec = importlib.util.spec_from_file_location("pth_to_pickle", ROOT / "tools" / "pth_to_pickle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pth_to_pickle_round_trip(tmp_path, capsys):
    tool = load_pth_to_pickle()
    state = torchvision.models.resnet34().state_dict()  # random init, no download
    torch.save({"model": state}, tmp_path / "r34.pth")
    tool.main([str(tmp_path / "r34.pth")])
    assert "wrote" in capsys.readouterr().out
    with open(tmp_path / "r34.pkl", "rb") as f:
        arrays = pickle.load(f)
    assert list(arrays) == list(state)
    for key, value in state.items():
        assert isinstance(arrays[key], np.ndarray)
        np.testing.assert_array_equal(arrays[key], value.numpy())


def test_pth_to_pickle_rejects_non_state_dict(tmp_path, capsys):
    tool = load_pth_to_pickle()
    torch.save({"epoch": 3}, tmp_path / "bad.pth")
    with pytest.raises(SystemExit) as exc:
        tool.main([str(tmp_path / "bad.pth"), str(tmp_path / "out.pkl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == [f"error: {tmp_path / 'bad.pth'}: expected a state dict of tensors "
                                           "(torchvision .pth format)"]
    assert not (tmp_path / "out.pkl").exists()


# --------------------------------------------------------- MLPerf learning rate at given iterations

def test_ssd_mlperf_learning_rate_by_hand():
    from ssd.step import learning_rate

    # base 0.08, 100 warm-up iters, warmup_factor 3 (start at base - base / 8), x0.1 at 300 and 400
    args = dict(base_lr=0.08, warmup_iters=100, warmup_factor=3, boundaries=[300, 400])
    expected = {
        0: 0.07,          # 0.08 - 100 * 0.08 / (100 * 2**3)
        60: 0.076,        # 0.08 - 40 * 0.0001
        99: 0.0799,       # last warm-up iteration: 0.08 - 0.0001
        100: 0.08,        # warm-up over
        299: 0.08,
        300: 0.008,       # first boundary, inclusive
        399: 0.008,
        400: 0.0008,      # second boundary
        5000: 0.0008,
    }
    for it, lr in expected.items():
        assert learning_rate(it, **args) == pytest.approx(lr, rel=1e-12), it
    # warm-up longer than a boundary: warm-up wins while it lasts, then the boundary applies
    assert learning_rate(5, 1.0, 10, 1, [5]) == pytest.approx(0.75)      # 1 - 5 / 20
    assert learning_rate(10, 1.0, 10, 1, [5]) == pytest.approx(0.1)
    assert learning_rate(0, 0.08, 0, 0, [300]) == 0.08                  # no warm-up at all


def test_train_split_without_boxes_stops_before_the_first_step_unless_allowed(tmp_path, capsys):
    """SSD's twin of YOLOX's allow_empty_train: a train split whose images have no box at all
    (background only) stops in one line naming the split and the flag; with --allow-empty-train
    the run trains and evaluates anyway."""
    import subprocess
    import sys

    from conftest import load_make_shapes

    data = load_make_shapes()(tmp_path / "data", num_train=2, num_val=1, seed=3)
    ann = data / "annotations" / "instances_train2017.json"
    coco = json.loads(ann.read_text())
    coco["annotations"] = []
    ann.write_text(json.dumps(coco))
    common = ["-d", str(data), "-b", "1", "-e", "1", "--num-workers", "0", "--no-save", "-s", "1"]
    code, err = run_main([*common, "--output-dir", str(tmp_path / "o1")], capsys)
    assert code == 2 and err == [f"error: the train split (train2017) has no boxes (2 images, labels in {ann}): "
                                 "training would learn background only; add labels, or allow it with "
                                 "--allow-empty-train"]
    run = subprocess.run([sys.executable, "ssd/train.py", *common, "--output-dir", str(tmp_path / "o2"),
                          "--allow-empty-train"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "finished at iteration 2" in run.stdout + run.stderr
