"""Exp lookup by name/file, typed overrides, and the builders as real Exp methods."""
import pytest
import torch

from accel.errors import UserError
from yolox.exp import Exp, get_exp


@pytest.mark.parametrize("name,depth,width,exp_name", [
    ("yolox-nano", 0.33, 0.25, "yolox_nano"), ("yolox_tiny", 0.33, 0.375, "yolox_tiny"),
    ("yolox-s", 0.33, 0.50, "yolox_s"), ("yolox-m", 0.67, 0.75, "yolox_m"),
    ("YOLOX-L", 1.0, 1.0, "yolox_l"), ("yolox_x", 1.33, 1.25, "yolox_x"), ("yolov3", 1.0, 1.0, "yolov3"),
])
def test_get_exp_by_name(name, depth, width, exp_name):
    exp = get_exp(exp_name=name)
    assert (exp.depth, exp.width, exp.exp_name) == (depth, width, exp_name)


def test_upstream_defaults():
    exp = get_exp(exp_name="yolox-s")
    assert exp.num_classes == 80 and exp.input_size == (640, 640) and exp.test_size == (640, 640)
    assert exp.basic_lr_per_img == 0.01 / 64 and exp.scheduler == "yoloxwarmcos" and exp.no_aug_epochs == 15
    assert exp.steps == 0 and exp.seed is None and exp.data_dir is None and exp.save_history_ckpt is True
    nano = get_exp(exp_name="yolox-nano")
    assert nano.input_size == (416, 416) and nano.enable_mixup is False and nano.random_size == (10, 20)


def test_unknown_name_lists_names():
    with pytest.raises(UserError, match="yolox-nano, yolox-tiny, yolox-s"):
        get_exp(exp_name="yolox-q")
    with pytest.raises(UserError, match="-f EXP_FILE or -n NAME"):
        get_exp()


def test_get_exp_from_file(tmp_path):
    good = tmp_path / "my_exp.py"
    good.write_text("from yolox.exp import Exp as Base\n\nclass Exp(Base):\n"
                    "    def __init__(self):\n        super().__init__()\n        self.num_classes = 4\n")
    assert get_exp(exp_file=str(good)).num_classes == 4
    bad = tmp_path / "no_exp.py"
    bad.write_text("X = 1\n")
    with pytest.raises(UserError, match="must define a class named Exp"):
        get_exp(exp_file=bad)
    with pytest.raises(UserError, match="does not exist"):
        get_exp(exp_file=tmp_path / "nope.py")


def test_merge_converts_to_attribute_types():
    exp = Exp()
    exp.merge(["max_epoch", "2", "save_history_ckpt", "False", "basic_lr_per_img", "0.0005",
               "input_size", "(320,416)", "test_size", "256,256", "mosaic_scale", "0.5,1.5",
               "output_dir", "./out", "seed", "7", "data_dir", "/data/COCO", "ema", "true", "warmup_lr", "1e-4"])
    assert exp.max_epoch == 2 and exp.save_history_ckpt is False and exp.basic_lr_per_img == 0.0005
    assert exp.input_size == (320, 416) and exp.test_size == (256, 256) and exp.mosaic_scale == (0.5, 1.5)
    assert exp.output_dir == "./out" and exp.seed == 7 and exp.data_dir == "/data/COCO" and exp.ema is True
    assert exp.warmup_lr == 1e-4
    exp.merge(["seed", "None"])
    assert exp.seed is None


@pytest.mark.parametrize("overrides,pattern", [
    (["max_epochs", "3"], "unknown exp override key 'max_epochs'; valid keys: .*max_epoch"),
    (["max_epoch", "2.5"], "exp override max_epoch '2.5': expected int"),
    (["save_history_ckpt", "maybe"], "expected bool"),
    (["input_size", "(640,640,3)"], "expected tuple"),
    (["seed", "abc"], "expected int"),
    (["max_epoch"], "odd count"),
])
def test_merge_rejects_bad_overrides(overrides, pattern):
    with pytest.raises(UserError, match=pattern):
        Exp().merge(overrides)


def test_repr_lists_settings_not_runtime_objects():
    exp = Exp()
    exp.model = object()  # the trainer attaches the model; it is not an override key
    text = repr(exp)
    assert "basic_lr_per_img" in text and "yoloxwarmcos" in text and "model" not in text
    with pytest.raises(UserError, match="unknown exp override key 'model'"):
        exp.merge(["model", "x"])


def test_exp_file_overriding_a_builder_is_seen_by_the_real_code():
    """As upstream: the builders are Exp methods, so an exp that overrides the data set changes
    what the real loader / evaluator code builds."""
    class Tiny(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return i

    class MyExp(Exp):
        def get_eval_dataset(self, testdev=False, legacy=False):
            return Tiny()

    exp = MyExp()
    exp.data_num_workers = 0
    loader = exp.get_eval_loader(batch_size=2, is_distributed=False)
    assert isinstance(loader.dataset, Tiny)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3], [4]]
    assert "pin_memory" not in exp._loader_kwargs()   # CPU: nothing to pin


# ------------------------------------------------------ sequence overrides keep their element types

def test_exp_sequence_overrides_keep_element_types():
    from yolox.exp import get_exp

    exp = get_exp(exp_name="yolox-nano")
    exp.merge(["input_size", "320,416", "test_size", "[256, 288]", "mosaic_scale", "0.5,2",
               "max_epoch", "12", "basic_lr_per_img", "1"])
    assert exp.input_size == (320, 416) and type(exp.input_size) is tuple
    assert [type(v) for v in exp.input_size] == [int, int]
    assert exp.test_size == (256, 288) and [type(v) for v in exp.test_size] == [int, int]
    assert exp.mosaic_scale == (0.5, 2.0) and [type(v) for v in exp.mosaic_scale] == [float, float]
    assert type(exp.max_epoch) is int and exp.max_epoch == 12
    assert type(exp.basic_lr_per_img) is float and exp.basic_lr_per_img == 1.0
    # an int slot takes whole numbers only
    from accel.errors import UserError
    with pytest.raises(UserError, match="input_size"):
        exp.merge(["input_size", "320.5,416"])
    assert exp.input_size == (320, 416)
