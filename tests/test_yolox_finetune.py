"""Fine-tuning YOLOX on your own data: shape-aware ``-c`` loading across class counts, and a
frozen backbone (upstream HEAD's ``freeze_module`` / ``adjust_status``, Habana's ``--freeze``)."""
import pytest
import torch
from torch import nn

from accel.errors import UserError
from conftest import load_make_shapes
from detcore.training.toolbox import seed_everything
from detcore.training.weights import load_matching
from yolox.core.cli import build_exp
from yolox.utils import adjust_status, freeze_module
from yolox_tools import ROOT, SHAPES_EXP, TINY, load_tool

train = load_tool("train")


@pytest.fixture(scope="module")
def shapes_2cls(tmp_path_factory):
    """A 2-class shapes set (star, circle), as a user's own data with another class list."""
    out = tmp_path_factory.mktemp("shapes_2cls")
    return load_make_shapes()(out, num_train=8, num_val=4, seed=3, classes=("star", "circle"))


def nano(num_classes, seed):
    exp = build_exp(train.make_parser().parse_args(["-f", SHAPES_EXP, "num_classes", str(num_classes)]),
                    need_data=False)
    seed_everything(seed)
    return exp.get_model()


def trainer_for(argv):
    args = train.make_parser().parse_args(argv)
    exp = build_exp(args)
    if args.freeze:
        exp.freeze_backbone = True
    return exp.get_trainer(args)


def test_four_class_checkpoint_fine_tunes_a_two_class_model(shapes_2cls, tmp_path):
    """Loaded tensors equal the checkpoint's, the class predictions (the only misfits) equal a
    fresh initialisation with the run's seed, one warning line names them; an epoch trains."""
    ckpt_model = nano(4, seed=11)
    ckpt = tmp_path / "four_class.pth"
    torch.save({"model": ckpt_model.state_dict(), "start_epoch": 14}, ckpt)

    trainer = trainer_for(["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(shapes_2cls), "--seed", "5",
                           "-c", str(ckpt), *TINY, "num_classes", "2", "class_names", "star,circle",
                           "max_epoch", "1", "output_dir", str(tmp_path / "out")])
    trainer.before_train()
    fresh = nano(2, seed=5).state_dict()
    saved = ckpt_model.state_dict()
    got = trainer.model.state_dict()
    skipped = sorted(k for k in got if got[k].shape != saved[k].shape)
    assert skipped == [f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    for key, value in got.items():
        expected = fresh[key] if key in skipped else saved[key]
        assert torch.equal(value.cpu(), expected), key
    # the two seeds give different fresh weights, so "equal to the checkpoint" means loaded
    assert not torch.equal(fresh["head.stems.0.conv.weight"], saved["head.stems.0.conv.weight"])
    log = (tmp_path / "out" / "yolox_nano_shapes" / "train_log.txt").read_text().splitlines()
    warned = [line for line in log if "skipped for a shape mismatch" in line]
    assert len(warned) == 1, warned
    assert "6 skipped for a shape mismatch (head.cls_preds.0.bias [4] -> [2]" in warned[0]
    assert "0 missing from the checkpoint" in warned[0]
    trainer.train_in_epoch()        # one epoch (2 iterations), eval and checkpoints
    trainer.after_train()
    assert trainer.run_iters == 2
    assert (tmp_path / "out" / "yolox_nano_shapes" / "best_ckpt.pth").is_file()


def test_another_model_is_not_a_fine_tune(tmp_path):
    """A checkpoint that fits under half of the model's tensors stops with one line."""
    model = nano(4, seed=0)
    other = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    with pytest.raises(UserError, match=r"fits only \d+ of the model's \d+ tensors.*another model"):
        load_matching(model, {"model": other}, source="checkpoint other.pth")
    with pytest.raises(UserError, match="fits only 0"):
        load_matching(model, {"model": {"fc.weight": torch.zeros(3)}})


def test_resume_stays_strict(shapes_2cls, tmp_path):
    """--resume with a checkpoint of another class count is refused (it is not a fine-tune)."""
    ckpt = tmp_path / "four_class.pth"
    torch.save({"model": nano(4, seed=0).state_dict(), "start_epoch": 1}, ckpt)
    trainer = trainer_for(["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(shapes_2cls), "--resume",
                           "-c", str(ckpt), *TINY, "num_classes", "2", "output_dir", str(tmp_path)])
    with pytest.raises(UserError, match=r"does not fit this model \(the checkpoint has 4 classes, the data has 2"
                                        r".*fine-tune: -c .* without --resume"):
        trainer.before_train()
    trainer.after_train()


def bn_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_module_and_adjust_status_semantics():
    model = nano(4, seed=0)
    freeze_module(model, name="backbone.backbone")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if "backbone.backbone" in n}
    assert frozen and all(n.startswith("backbone.backbone.") for n in frozen)
    model.train()
    assert not any(m.training for m in model.backbone.backbone.modules())
    assert all(m.training for m in bn_layers(model.head))
    with adjust_status(model, training=False):
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in bn_layers(model.head))
    assert not any(m.training for m in bn_layers(model.backbone.backbone))
    with adjust_status(model.backbone.backbone, training=True):
        assert all(m.training for m in model.backbone.backbone.modules())
    assert not any(m.training for m in model.backbone.backbone.modules())
    whole = freeze_module(nano(4, seed=0))
    assert not any(p.requires_grad for p in whole.parameters())


def test_frozen_backbone_does_not_move_while_the_head_learns(shapes_coco, tmp_path):
    """--freeze: backbone weights and BN statistics (raw and EMA) stay bit-equal over training
    steps; the neck and head move."""
    trainer = trainer_for(["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(shapes_coco), "--seed", "0",
                           "--freeze", *TINY, "output_dir", str(tmp_path)])
    assert trainer.exp.freeze_backbone
    trainer.before_train()
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        trainer.train_one_iter()
    after = model.state_dict()
    ema = trainer.ema.ema.state_dict()
    backbone = [k for k in after if k.startswith("backbone.backbone.")]
    assert any(k.endswith("running_mean") for k in backbone)
    for key in backbone:
        assert torch.equal(after[key], before[key]), key
        assert torch.equal(ema[key], before[key]), key
    for prefix in ("head.", "backbone.lateral_conv0"):
        moved = [k for k in after if k.startswith(prefix) and not torch.equal(after[k], before[k])]
        assert moved, prefix
    assert not any(m.training for m in bn_layers(model.backbone.backbone))
    trainer.after_train()


def test_released_coco_weights_fit_the_custom_exp():
    """Upstream's workflow: released 80-class yolox_s.pth into exps/example/custom/yolox_s.py
    (71 classes): all but the 6 class-prediction tensors load."""
    parse = train.make_parser().parse_args
    released = build_exp(parse(["-n", "yolox-s"]), need_data=False).get_model().state_dict()
    custom = build_exp(parse(["-f", str(ROOT / "exps" / "example" / "custom" / "yolox_s.py")]),
                       need_data=False).get_model()
    loaded = load_matching(custom, {"model": released})
    own = custom.state_dict()
    assert len(own) - len(loaded) == 6
    assert own["head.cls_preds.0.weight"].shape[0] == 71
    assert torch.equal(own["backbone.backbone.stem.conv.conv.weight"],
                       released["backbone.backbone.stem.conv.conv.weight"])


# ------------------------------------------------------ the "fits under half" rule of load_matching
# Fewer than half of the model's tensors fitting by name AND shape is another model; a name match
# of another shape does not count as fitting.

def four_tensor_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))   # 0.weight 0.bias 1.weight 1.bias


def test_name_matches_of_another_shape_do_not_count_as_fitting():
    model = four_tensor_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # every name matches, but only 1.bias has the model's shape: 1 of 4 tensors fits (< half)
    ckpt = {"model": {"0.weight": torch.ones(5, 4), "0.bias": torch.ones(5),
                      "1.weight": torch.ones(4, 5), "1.bias": torch.ones(4)}}
    with pytest.raises(UserError, match="fits only 1 of the model's 4 tensors"):
        load_matching(model, ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])       # nothing was loaded


def test_exactly_half_fitting_is_a_fine_tune():
    model = four_tensor_model()
    ckpt = {"model": {"0.weight": torch.full((4, 4), 2.0), "0.bias": torch.full((4,), 3.0),
                      "1.weight": torch.ones(9, 4), "1.bias": torch.ones(9)}}   # a new class count
    assert load_matching(model, ckpt) == ["0.bias", "0.weight"]
    assert (model[0].weight == 2).all() and (model[0].bias == 3).all()
    assert model[1].weight.shape == (4, 4)
