"""SSD on your own labels: ``--checkpoint`` with a weights-only file of another label count
fine-tunes (matching tensors loaded, the rest freshly initialised, one warning), a resume file
stays strict, and ``--eval-only`` scores either kind of checkpoint without training or saving."""
import json
import re

import pytest
import torch

from ssd import SSD300, engine
from ssd import train as ssd_train
from yolox_tools import run_cli

SHAPES = ("circle", "rectangle", "triangle", "star")        # tools/make_shapes.py's categories


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """4 train images (3 with boxes: one batch of 2) and 2 val images; 4 classes = 5 labels."""
    from conftest import load_make_shapes

    return load_make_shapes()(tmp_path_factory.mktemp("ssd_finetune"), num_train=4, num_val=2, seed=0)


def ssd_weights(labels, seed, names=None):
    """A seeded SSD300(label_num=labels) state dict and its reference-style ``label_map``."""
    torch.manual_seed(seed)
    state = SSD300(label_num=labels).state_dict()
    names = names or [f"class{i}" for i in range(1, labels)]
    return state, {0: "background", **{i + 1: n for i, n in enumerate(names)}}


def run_main(argv, capsys):
    return run_cli(ssd_train.main, argv, capsys)


def test_81_label_weights_fine_tune_on_5_labels(shapes, tmp_path):
    """Every tensor of the COCO-sized file whose name and shape fit is loaded; the 12 class-
    confidence tensors keep exactly the initialisation a fresh SSD300(label_num=5) gets from the
    same seed (so seeding precedes building the model); one warning says so; one epoch trains."""
    from yolox_tools import ssd_run

    saved, label_map = ssd_weights(81, seed=123)
    ckpt = tmp_path / "iter_7.pt"
    torch.save({"model": saved, "label_map": label_map}, ckpt)
    out = tmp_path / "out"
    run = ssd_run(shapes, out, "--checkpoint", str(ckpt), "-b", "2", "-e", "1", "--val-interval", "100",
                  "--trainable-backbone-layers", "0", "--log-interval", "1")
    try:
        torch.manual_seed(0)                          # ssd_run's -s 0, --pretrained-backbone none
        fresh = SSD300(label_num=5).state_dict()
        own = run.net.state_dict()
        assert run.net.label_num == 5 and run.iteration == 0
        skipped = []
        for key, value in own.items():
            if saved[key].shape == value.shape:
                assert torch.equal(value, saved[key]), key
            else:
                skipped.append(key)
                assert torch.equal(value, fresh[key]), key
        assert sorted(skipped) == sorted(f"conf.{i}.{p}" for i in range(6) for p in ("weight", "bias"))
        warnings = [ln for ln in (out / "train_log.txt").read_text().splitlines() if "WARNING" in ln
                    and str(ckpt) in ln]
        assert len(warnings) == 1, warnings
        assert f"loaded {len(own) - 12} of {len(own)} tensors; 12 skipped" in warnings[0]
        assert run.fit() == "aborted"             # one epoch, no threshold reached
        log = (out / "train_log.txt").read_text()
        loss = float(re.search(r"iteration 1 epoch 1 loss (\S+)", log).group(1))
        assert torch.isfinite(torch.tensor(loss)) and "finished at iteration 1" in log
    finally:
        run.lock.release()


def test_resume_file_of_other_labels_stays_strict(shapes, tmp_path, capsys):
    """A resume file (has "iteration") of another label count is one line that points to the
    weights-only models/iter_N.pt for fine-tuning, not a silent partial load."""
    saved, label_map = ssd_weights(81, seed=1)
    ckpt = tmp_path / "ssd300_latest.pth"
    torch.save({"model": saved, "iteration": 10, "epoch": 1, "opt": "sgd", "seed": 3, "label_map": label_map},
               ckpt)
    code, _, err, _ = run_main(["-d", str(shapes), "--checkpoint", str(ckpt), "--pretrained-backbone", "none",
                                "-b", "2", "--num-workers", "0", "--no-save", "--output-dir", str(tmp_path / "o")],
                               capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --checkpoint {ckpt}: does not fit this model (it predicts 81 labels, "
                             "--data has 5 (background included))")
    assert "weights-only models/iter_N.pt" in err[0]


def test_weights_of_another_model_stop_with_one_line(shapes, tmp_path, capsys):
    """A weights-only file that fills under half the model is another model, not a fine-tune."""
    ckpt = tmp_path / "iter_1.pt"
    torch.save({"model": {"backbone.stem.conv.weight": torch.zeros(3)}, "label_map": {}}, ckpt)
    code, _, err, _ = run_main(["-d", str(shapes), "--checkpoint", str(ckpt), "--pretrained-backbone", "none",
                                "-b", "2", "--num-workers", "0", "--no-save", "--output-dir", str(tmp_path / "o")],
                               capsys)
    assert code == 2 and len(err) == 1 and f"--checkpoint {ckpt} fits only 0 of the model's" in err[0], err


def test_run_checkpoints_name_their_classes(shapes, tmp_path):
    """ssd300_latest.pth carries label_map as iter_N.pt does, so the demo can name classes."""
    from yolox_tools import ssd_run

    run = ssd_run(shapes, tmp_path, "-b", "2")
    try:
        run.args.no_save = False
        run.save(0, 0)
    finally:
        run.lock.release()
    state = torch.load(tmp_path / engine.CHECKPOINT_NAME, weights_only=True)
    assert state["label_map"] == {0: "background", **{i + 1: n for i, n in enumerate(SHAPES)}}


@pytest.mark.parametrize("kind", ["weights", "resume"])
def test_eval_only_scores_the_checkpoint_and_writes_nothing(shapes, tmp_path, capsys, monkeypatch, kind):
    """``--eval-only`` evaluates exactly the checkpoint's weights on the val split, prints the
    COCO summary and the AP lines, and leaves no checkpoint, MLPerf log or run lock behind."""
    saved, label_map = ssd_weights(5, seed=7, names=SHAPES)
    ckpt = tmp_path / "ckpt.pth"
    extra = {"label_map": label_map} if kind == "weights" else {"iteration": 4, "opt": "sgd", "seed": 2}
    torch.save({"model": saved, **extra}, ckpt)
    seen = []
    real = engine.evaluate

    def spy(model, *args, **kwargs):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", spy)
    out = tmp_path / "out"
    analyze = ["--analyze", "2"] if kind == "weights" else []
    code, stdout, err, log = run_main(["--eval-only", "--checkpoint", str(ckpt), "-d", str(shapes), "-b", "2",
                                       "--num-workers", "0", "--output-dir", str(out), *analyze], capsys)
    assert code == 0 and not [ln for ln in err if ln.startswith("error")], err
    assert len(seen) == 1 and all(torch.equal(seen[0][k], v) for k, v in saved.items())
    ap = re.search(r"AP50_95: (\S+)\nAP50: (\S+)", stdout)
    assert ap and 0.0 <= float(ap.group(1)) <= float(ap.group(2)) <= 1.0, stdout
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in log
    # reports only (no checkpoint, MLPerf log or lock): the per-class table, csvs and plots
    assert "per class at IoU 0.50, confidence" in log
    reports = ["F1_curve.png", "PR_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.csv",
               "confusion_matrix.png", "results_per_class.csv", "val_log.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(reports + (["errors"] if analyze else []))
    if analyze:
        per_image = json.loads((out / "errors" / "per_image.json").read_text())["images"]
        assert len(per_image) == len(list((shapes / "val2017").iterdir()))
        drawn = list((out / "errors").glob("*.jpg"))
        assert len(drawn) == min(2, sum(e["errors"] > 0 for e in per_image))


def test_eval_only_refuses_other_labels(shapes, tmp_path, capsys):
    """Scoring a model against classes it was not trained on is one line: another label count,
    or the same count with other names."""
    saved, label_map = ssd_weights(81, seed=1)
    ckpt = tmp_path / "iter_1.pt"
    torch.save({"model": saved, "label_map": label_map}, ckpt)
    base = ["--eval-only", "-d", str(shapes), "-b", "2", "--num-workers", "0", "--output-dir", str(tmp_path / "o")]
    code, _, err, _ = run_main([*base, "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and len(err) == 1 and "it predicts 81 labels, --data has 5" in err[0], err
    saved, label_map = ssd_weights(5, seed=1, names=["cat", "dog", "cow", "hen"])
    torch.save({"model": saved, "label_map": label_map}, ckpt)
    code, _, err, _ = run_main([*base, "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and len(err) == 1, err
    assert "trained on the classes cat, dog, cow, hen, but --data has circle, rectangle, triangle, star" in err[0]
    code, _, err, _ = run_main(base, capsys)
    assert code == 2 and err == ["error: --eval-only needs --checkpoint FILE (ssd300_latest.pth or "
                                 "models/iter_N.pt)"]
