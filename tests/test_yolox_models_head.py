"""Head decoding (hand-computed boxes), eval/train call conventions, loss wiring."""
import math

import pytest
import torch

from yolox.exp import get_exp
from yolox.models import YOLOXHead
from yolox_tools import RecordOps

LEVELS = [(4, 5), (2, 3), (1, 2)]  # feature-map (h, w) per stride 8, 16, 32


@pytest.fixture
def head():
    """Head whose prediction convs output constants, so every anchor's box is known in closed form."""
    torch.manual_seed(0)
    h = YOLOXHead(num_classes=2, width=0.25).eval()
    with torch.no_grad():
        for conv in list(h.reg_preds) + list(h.obj_preds) + list(h.cls_preds):
            conv.weight.zero_()
        for conv in h.reg_preds:
            conv.bias.copy_(torch.tensor([0.5, 0.25, math.log(2.0), 0.0]))
        for conv in h.obj_preds:
            conv.bias.fill_(0.0)
        for conv in h.cls_preds:
            conv.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    return h


def features(batch=2):
    return [torch.randn(batch, c, hh, ww) for c, (hh, ww) in zip((64, 128, 256), LEVELS)]


def test_eval_decodes_grid_and_stride(head):
    out = head(features())
    assert out.shape == (2, 20 + 6 + 2, 7)
    offset = 0
    for (hh, ww), stride in zip(LEVELS, (8, 16, 32)):
        for y in range(hh):
            for x in range(ww):
                expected = torch.tensor([(0.5 + x) * stride, (0.25 + y) * stride, 2.0 * stride, 1.0 * stride,
                                         0.5, 0.5, 0.75])
                torch.testing.assert_close(out[1, offset + y * ww + x], expected)
        offset += hh * ww


def test_no_decode_returns_raw_regression_and_probabilities(head):
    head.decode_in_inference = False
    out = head(features(1))
    torch.testing.assert_close(out[0, 7], torch.tensor([0.5, 0.25, math.log(2.0), 0.0, 0.5, 0.5, 0.75]))


def test_grids_and_strides_layout(head):
    grids, strides = head.grids_and_strides(LEVELS, torch.float32, torch.device("cpu"))
    assert grids.shape == (28, 2) and strides.shape == (28,)
    assert grids[6].tolist() == [1.0, 1.0]  # level 0 is 4 rows x 5 cols: index 6 = row 1, col 1
    assert grids[20 + 5].tolist() == [2.0, 1.0]
    assert strides.tolist() == [8.0] * 20 + [16.0] * 6 + [32.0] * 2


def test_train_mode_needs_targets(head):
    head.train()
    with pytest.raises(ValueError, match="targets"):
        head(features())


def _targets():
    t = torch.zeros(2, 4, 5)
    t[0, 0] = torch.tensor([3.0, 20.0, 24.0, 16.0, 20.0])
    t[0, 1] = torch.tensor([1.0, 44.0, 40.0, 30.0, 22.0])
    return t  # image 1 has no boxes: valid, only objectness loss


def test_model_train_returns_loss_dict_and_backprops():
    torch.manual_seed(0)
    model = get_exp(exp_name="yolox-nano").get_model().train()
    images = torch.rand(2, 3, 64, 64)
    out = model(images, _targets())
    assert set(out) == {"total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss", "num_fg"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    total = out["iou_loss"] + out["conf_loss"] + out["cls_loss"] + out["l1_loss"]
    torch.testing.assert_close(out["total_loss"], total)
    assert out["l1_loss"].item() == 0.0 and out["num_fg"].item() > 0
    out["total_loss"].backward()
    assert model.head.reg_preds[0].weight.grad.abs().sum() > 0

    model.head.use_l1 = True
    assert model(images, _targets())["l1_loss"].item() > 0


def test_matches_released_yolox_numbers():
    """Seeded yolox-s (init order and values as upstream) reproduces yolox==0.3.0's outputs.

    Reference numbers were produced by the released package in a side virtualenv with the same
    seed, input and targets; they pin init, forward, decoding and the head -> loss wiring.
    """
    torch.manual_seed(0)
    model = get_exp(exp_name="yolox-s").get_model()
    x = torch.rand(2, 3, 128, 160)
    targets = torch.zeros(2, 5, 5)
    targets[0, 0] = torch.tensor([3.0, 40.0, 50.0, 30.0, 40.0])
    targets[0, 1] = torch.tensor([1.0, 100.0, 60.0, 50.0, 30.0])
    targets[1, 0] = torch.tensor([7.0, 80.0, 64.0, 120.0, 100.0])

    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 420, 85)
    torch.testing.assert_close(y[0, 0, :4], torch.tensor([-0.08103562, -0.69596702, 8.72207451, 8.68451214]))
    torch.testing.assert_close(y[1, -1, :4], torch.tensor([126.423264, 97.2835846, 33.3102188, 30.5784111]))
    assert y.double().sum().item() == pytest.approx(130244.6726, rel=1e-5)

    model.train()
    model.head.use_l1 = True
    out = {k: v.item() for k, v in model(x, targets).items()}
    expected = {"total_loss": 16.43575668, "iou_loss": 4.87413979, "conf_loss": 7.13384247,
                "cls_loss": 1.66580904, "l1_loss": 2.76196551, "num_fg": 1.0}
    assert out == pytest.approx(expected, rel=1e-4)


def test_training_backward_fills_no_full_size_zero_gradients():
    """Decode and loss split the head's [B, A, 5 + C] output once instead of slicing it: every
    slice's (or select's) backward would fill a zero tensor of that full size, to be summed."""
    torch.manual_seed(0)
    head = YOLOXHead(num_classes=2, width=0.25).train()
    feats = [f.requires_grad_() for f in features()]
    targets = _targets()
    targets[..., 0].clamp_(max=1)  # two classes here
    loss = head(feats, targets)["total_loss"]
    width = 5 + 2
    with RecordOps() as ops:
        loss.backward()
    assert feats[0].grad.abs().sum() > 0
    sizes = [tuple(args[1]) for args in ops.args_of("aten.slice_backward", "aten.select_backward")]
    assert not [s for s in sizes if s[-1] == width], sizes
