"""Real YOLOX-nano training on generated shapes (CPU): learning, checkpoints, exact resume."""
import math

import torch

from accel import unwrap
from accel.checkpoint import load
from yolox.core.cli import build_exp
from yolox_tools import SHAPES_EXP, TINY, load_tool

train = load_tool("train")


def make_trainer(argv):
    args = train.make_parser().parse_args(argv)
    exp = build_exp(args)
    return exp.get_trainer(args)


def test_loss_decreases_on_a_fixed_batch(shapes_coco, tmp_path):
    trainer = make_trainer(["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(shapes_coco), "--seed", "0",
                            *TINY, "output_dir", str(tmp_path)])
    trainer.before_train()
    inps, targets = next(trainer.train_iter)[:2]
    assert targets.abs().sum() > 0
    trainer.set_lr(0.01)
    losses = [float(trainer.train_step(inps, targets)["total_loss"]) for _ in range(10)]
    assert all(math.isfinite(v) for v in losses)
    # SimOTA re-assigns every step, so the curve is noisy; its trend must still go down
    assert losses[-1] < losses[0] and sum(losses[-3:]) < 0.97 * sum(losses[:3]), losses
    assert trainer.ema.updates == 10


def assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_steps_stop_then_resume_continues_exactly(shapes_coco, tmp_path):
    # 24 train images / batch 8 = 3 iterations per epoch; steps 4 stops in epoch 2 after 1 iteration
    common = ["-f", SHAPES_EXP, "-b", "8", "--data_dir", str(shapes_coco), "--seed", "0", *TINY,
              "max_epoch", "2", "no_aug_epochs", "1", "eval_interval", "1", "output_dir", str(tmp_path)]
    train.main([*common, "steps", "4"])
    out = tmp_path / "yolox_nano_shapes"
    assert (out / "best_ckpt.pth").is_file() and (out / "train_log.txt").is_file()
    saved = load(out / "latest_ckpt.pth")
    assert (saved["start_epoch"], saved["start_iter"], saved["iteration"]) == (1, 1, 4)
    assert saved["ema_updates"] == 4
    assert load(out / "best_ckpt.pth")["start_epoch"] == 1

    trainer = make_trainer(["--resume", *common])
    trainer.before_train()
    assert (trainer.start_epoch, trainer.start_iter) == (1, 1)
    assert_state_equal(unwrap(trainer.model).state_dict(), saved["model_raw"])
    assert_state_equal(trainer.ema.ema.state_dict(), saved["model"])
    assert trainer.ema.updates == 4
    opt = trainer.optimizer.state_dict()
    assert [g["lr"] for g in opt["param_groups"]] == [g["lr"] for g in saved["optimizer"]["param_groups"]]
    for idx, state in saved["optimizer"]["state"].items():
        assert torch.equal(opt["state"][idx]["momentum_buffer"], state["momentum_buffer"])
    assert unwrap(trainer.model).head.use_l1          # epoch 2 is the no-aug (L1) epoch
    try:
        trainer.train_in_epoch()
    finally:
        trainer.after_train()
    assert trainer.run_iters == 2                     # only the 2 iterations left in epoch 2
    final = load(out / "latest_ckpt.pth")
    assert (final["start_epoch"], final["start_iter"], final["iteration"]) == (2, 0, 6)
    assert final["ema_updates"] == 6
