"""Real YOLOX-nano training on generated shapes (CPU): learning, checkpoints, exact resume."""
import math

import torch

from detcore.training.checkpoints import load
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
    inps, targets = trainer.next_batch()
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


def test_steps_alone_is_one_capped_epoch_as_habana(shapes_coco, tmp_path):
    """Habana's recipe: ``steps N`` without ``max_epoch`` = one epoch of N iterations, the LR
    schedule over those N, ending like any epoch (eval, latest + best checkpoints)."""
    common = ["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(shapes_coco), "--seed", "0", *TINY,
              "output_dir", str(tmp_path)]
    trainer = make_trainer([*common, "steps", "2"])
    assert trainer.exp.max_epoch == 1
    trainer.train()
    assert trainer.max_iter == 2 and trainer.run_iters == 2        # 24 images / 4 = 6, capped at 2
    assert trainer.lr_scheduler.total_iters == 2
    out = tmp_path / "yolox_nano_shapes"
    latest = load(out / "latest_ckpt.pth")
    assert (latest["start_epoch"], latest["iteration"]) == (1, 2)
    assert (out / "best_ckpt.pth").is_file() and (out / "results.csv").is_file()
    # with max_epoch given, every epoch is capped at N iterations
    both = make_trainer([*common, "steps", "2", "max_epoch", "3"])
    assert both.exp.max_epoch == 3 and both.exp.steps == 2


class Killed(Exception):
    pass


def test_killed_and_resumed_run_equals_straight_run(shapes_coco, tmp_path, monkeypatch):
    """kill after the first epoch's checkpoint, --resume, and every tensor of the final
    checkpoint (weights, EMA, optimizer) equals the uninterrupted run: mosaic, mixup,
    multi-scale and 2 loader workers on; the resumed run takes the seed from the checkpoint."""
    from yolox.core.trainer import Trainer

    aug = ["-f", SHAPES_EXP, "-b", "8", "--data_dir", str(shapes_coco)]
    opts = [*TINY,
           "multiscale_range", "1", "mosaic_prob", "1.0", "enable_mixup", "True", "mixup_prob", "0.5",
           "data_num_workers", "2", "max_epoch", "2", "no_aug_epochs", "0", "eval_interval", "5",
           "print_interval", "1"]
    train.main([*aug, "--seed", "7", *opts, "output_dir", str(tmp_path / "straight")])

    real = Trainer.after_epoch

    def kill_after_first(self):
        real(self)
        if self.epoch == 0:
            raise Killed

    monkeypatch.setattr(Trainer, "after_epoch", kill_after_first)
    try:
        train.main([*aug, "--seed", "7", *opts, "output_dir", str(tmp_path / "split")])
    except Killed:
        pass
    monkeypatch.setattr(Trainer, "after_epoch", real)
    train.main([*aug, "--resume", *opts, "output_dir", str(tmp_path / "split")])  # seed from the ckpt

    a = load(tmp_path / "straight" / "yolox_nano_shapes" / "latest_ckpt.pth")
    b = load(tmp_path / "split" / "yolox_nano_shapes" / "latest_ckpt.pth")
    assert a["iteration"] == b["iteration"] == 6 and a["seed"] == b["seed"] == 7
    assert a["input_size"] == b["input_size"]
    for key in ("model", "model_raw"):
        assert_state_equal(a[key], b[key])
    for idx, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][idx]["momentum_buffer"])
