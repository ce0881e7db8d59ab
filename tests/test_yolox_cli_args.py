"""The YOLOX CLIs: the issue's command lines parse as written, overrides are typed, data-dir
fallbacks work, and bad input ends in one ``error:`` line with exit code 2."""
import json
import os
import subprocess
import sys

import pytest
import torch

from accel.errors import UserError
from yolox.core.cli import build_exp, resolve_data_dir
from yolox_tools import ROOT, SHAPES_EXP, load_tool

train = load_tool("train")
evaluate = load_tool("eval")
demo = load_tool("demo")


def test_issue_command_lines_parse(tmp_path):
    args = train.make_parser().parse_args(
        ["--name", "yolox-s", "--batch-size", "8", "--data_dir", str(tmp_path), "--use_hpu",
         "steps", "500", "output_dir", "./yolox_output"])
    assert (args.name, args.batch_size, args.use_hpu) == ("yolox-s", 8, True)
    exp = build_exp(args)
    assert (exp.steps, exp.output_dir, exp.data_dir) == (500, "./yolox_output", str(tmp_path))
    assert args.experiment_name == "yolox_s"

    args = train.make_parser().parse_args(
        ["--name", "yolox-s", "--devices", "8", "--batch-size", "64", "--data_dir", str(tmp_path),
         "--use_hpu", "--hmp", "--hmp-opt-level", "O1", "--hmp-fp32", "./ops_fp32_yolox.txt",
         "--hmp-bf16", "./ops_bf16_yolox.txt", "print_interval", "100", "max_epoch", "300",
         "save_history_ckpt", "False", "eval_interval", "300", "output_dir", "./yolox_output"])
    assert (args.devices, args.hmp, args.hmp_fp32) == (8, True, "./ops_fp32_yolox.txt")
    exp = build_exp(args)
    assert (exp.print_interval, exp.max_epoch, exp.save_history_ckpt, exp.eval_interval) == (100, 300, False, 300)

    args = train.make_parser().parse_args(
        ["-f", "exps/default/yolox_s.py", "-b", "4", "-d", "1", "--data-dir", str(tmp_path), "--device", "cpu",
         "--autocast", "--resume", "-c", "x.pth", "-e", "3", "--cache", "--seed", "5",
         "input_size", "(320,320)", "basic_lr_per_img", "0.001"])
    exp = build_exp(args)
    assert ((args.exp_file, args.start_epoch, args.cache, args.autocast, exp.seed)
            == ("exps/default/yolox_s.py", 3, "ram", True, 5))
    assert exp.input_size == (320, 320) and exp.basic_lr_per_img == 0.001
    # --cache [ram|disk] as upstream HEAD; a bare --cache before the overrides still means 'ram'
    for flags, cache in ((["--cache", "disk"], "disk"), (["--cache"], "ram"), ([], None)):
        args = train.make_parser().parse_args(["-f", "exps/default/yolox_s.py", *flags, "max_epoch", "2"])
        assert (args.cache, args.opts) == (cache, ["max_epoch", "2"])


def test_bad_override_is_user_error(tmp_path):
    args = train.make_parser().parse_args(["-n", "yolox-nano", "--data_dir", str(tmp_path), "max_epoch", "ten"])
    with pytest.raises(UserError, match="max_epoch"):
        build_exp(args)


def test_data_dir_fallbacks(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    assert resolve_data_dir(None, None, {"YOLOX_DATADIR": str(env_dir)}) == str(env_dir)
    assert resolve_data_dir(str(tmp_path), "other", {"YOLOX_DATADIR": str(env_dir)}) == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="datasets/COCO"):
        resolve_data_dir(None, None, {})
    (tmp_path / "datasets" / "COCO").mkdir(parents=True)
    assert resolve_data_dir(None, None, {}) == os.path.join("datasets", "COCO")


def run_main(tool, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, err[-1] if err else ""


@pytest.fixture(scope="module")
def nano4_ckpt(tmp_path_factory):
    """An untrained 4-class yolox-nano checkpoint in the trainer's format."""
    from yolox.exp import get_exp

    path = tmp_path_factory.mktemp("ckpt") / "nano4.pth"
    torch.manual_seed(0)
    torch.save({"model": get_exp(SHAPES_EXP).get_model().state_dict()}, path)
    return path


def test_bad_inputs_give_one_line_errors(shapes_coco, tmp_path, nano4_ckpt, capsys):
    code, line = run_main(train, ["-n", "yolox-nano", "--data_dir", str(tmp_path / "missing")], capsys)
    assert code == 2 and line.startswith("error: data directory") and "missing" in line
    code, line = run_main(train, ["-n", "yolox-small", "--data_dir", str(shapes_coco)], capsys)
    assert code == 2 and line.startswith("error: unknown model name") and "yolox-s" in line
    code, line = run_main(train, ["-n", "yolox-nano", "--data_dir", str(shapes_coco), "epochs", "3"], capsys)
    assert code == 2 and line.startswith("error: unknown exp override key 'epochs'")
    code, line = run_main(train, ["-n", "yolox-nano", "--data_dir", str(shapes_coco), "--batch-size", "x"], capsys)
    assert code == 2 and line.startswith("error: train.py: argument -b/--batch-size")
    if not _has_tensorboard():
        code, line = run_main(train, ["-n", "yolox-nano", "--data_dir", str(shapes_coco), "-l", "tensorboard"], capsys)
        assert code == 2 and "tensorboard package" in line
    # a 4-class checkpoint evaluated as the 80-class yolox-nano: names the mismatched keys
    # yolox-nano's default 80 classes would take the data's 4 (sync_classes); set explicitly, the
    # count that differs from the data is one line before any weights load
    code, line = run_main(evaluate, ["-n", "yolox-nano", "-c", str(nano4_ckpt), "--data_dir", str(shapes_coco),
                                     "--tsize", "160", "output_dir", str(tmp_path), "num_classes", "80"], capsys)
    assert code == 2 and line.startswith("error: num_classes 80 (set by a num_classes override)")
    assert "names 4 classes" in line
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    code, line = run_main(demo, ["image", "-f", SHAPES_EXP, "-c", str(junk), "--path", str(shapes_coco)], capsys)
    assert code == 2 and line.startswith("error: checkpoint") and "junk.pth" in line


def _has_tensorboard():
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False


def test_cli_process_exit_code_and_single_line(tmp_path):
    """The real process: exit status 2 and exactly one stderr line, no traceback."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "eval.py"), "-n", "yolox-nope",
                           "--data_dir", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: unknown model name 'yolox-nope'")


def test_eval_and_demo_cli_run(shapes_coco, tmp_path, nano4_ckpt, capsys):
    evaluate.main(["-f", SHAPES_EXP, "-c", str(nano4_ckpt), "-b", "6", "--data_dir", str(shapes_coco),
                   "--conf", "0.001", "--nms", "0.65", "--tsize", "160", "--fuse", "--analyze", "3",
                   "data_num_workers", "0", "output_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "AP50:" in out and "AP50_95:" in out
    run = tmp_path / "yolox_nano_shapes"
    for name in ("results_per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "PR_curve.png",
                 "F1_curve.png", "P_curve.png", "R_curve.png", "errors/per_image.json"):
        assert (run / name).stat().st_size > 0, name
    per_image = json.loads((run / "errors" / "per_image.json").read_text())["images"]
    assert len(per_image) == 12 and per_image == sorted(per_image, key=lambda e: (-e["errors"], e["image_id"]))
    assert len(list((run / "errors").glob("*.jpg"))) == min(3, sum(e["errors"] > 0 for e in per_image))
    img = sorted((shapes_coco / "val2017").glob("*.jpg"))[0]
    demo.main(["image", "-f", SHAPES_EXP, "-c", str(nano4_ckpt), "--path", str(img), "--conf", "0.001",
               "--tsize", "160", "--save_result", "--device", "cpu", "output_dir", str(tmp_path)])
    out = capsys.readouterr().out
    saved = list((tmp_path / "yolox_nano_shapes" / "vis_res").rglob(img.name))
    assert len(saved) == 1 and str(saved[0].parent) in out
