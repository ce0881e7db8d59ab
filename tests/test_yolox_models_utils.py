"""Box helpers, post-processing (confidence + NMS), conv-BN fusion, checkpoint loading, model info."""
import numpy as np
import pytest
import torch

from accel.errors import UserError
from yolox.exp import get_exp
from yolox.utils import (bboxes_iou, cxcywh2xyxy, fuse_model, get_model_info, load_ckpt, postprocess,
                         xyxy2cxcywh, xyxy2xywh)
from yolox_tools import RecordOps


def test_box_conversions_by_hand():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    assert xyxy2xywh(xyxy).tolist() == [[10.0, 20.0, 40.0, 20.0]]
    assert xyxy2cxcywh(xyxy).tolist() == [[30.0, 30.0, 40.0, 20.0]]
    assert cxcywh2xyxy(torch.tensor([[30.0, 30.0, 40.0, 20.0]])).tolist() == xyxy.tolist()
    assert xyxy.tolist() == [[10.0, 20.0, 50.0, 40.0]]  # inputs are not modified
    np.testing.assert_allclose(xyxy2xywh(xyxy.numpy()), [[10, 20, 40, 20]])


def test_bboxes_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(bboxes_iou(a, b), torch.tensor([[50 / 150, 0.0, 1.0]]))
    # same boxes as (cx, cy, w, h)
    torch.testing.assert_close(bboxes_iou(torch.tensor([[5.0, 5.0, 10.0, 10.0]]),
                                          torch.tensor([[10.0, 5.0, 10.0, 10.0]]), xyxy=False),
                               torch.tensor([[50 / 150]]))


def _pred(rows, num_classes=2):
    """rows of (cx, cy, w, h, obj, cls...) for one image -> [1, A, 5 + C]."""
    return torch.tensor([rows], dtype=torch.float32)


def test_postprocess_nms_is_class_aware():
    # Two heavily overlapping boxes (IoU 0.82) of different classes and a low-confidence third.
    pred = _pred([[50, 50, 20, 20, 0.9, 0.9, 0.1],
                  [51, 50, 20, 20, 0.8, 0.2, 0.9],
                  [10, 10, 8, 8, 0.9, 0.5, 0.1]])
    (dets,) = postprocess(pred, num_classes=2, conf_thre=0.5, nms_thre=0.45)
    torch.testing.assert_close(dets, torch.tensor([[40.0, 40.0, 60.0, 60.0, 0.9, 0.9, 0.0],
                                                   [41.0, 40.0, 61.0, 60.0, 0.8, 0.9, 1.0]]))
    (agnostic,) = postprocess(pred, num_classes=2, conf_thre=0.5, nms_thre=0.45, class_agnostic=True)
    assert agnostic.shape == (1, 7) and agnostic[0, 6] == 0  # the 0.81-score box wins over 0.72


def test_postprocess_same_class_overlap_keeps_best_and_empty_is_0x7():
    pred = torch.cat([_pred([[50, 50, 20, 20, 0.9, 0.9, 0.0], [52, 50, 20, 20, 0.95, 0.9, 0.0]]),
                      _pred([[50, 50, 20, 20, 0.1, 0.1, 0.0], [52, 50, 20, 20, 0.1, 0.1, 0.0]])])
    first, second = postprocess(pred, num_classes=2, conf_thre=0.3, nms_thre=0.45)
    assert first.shape == (1, 7) and first[0, 4].item() == pytest.approx(0.95)
    assert second.shape == (0, 7)


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    model = get_exp(exp_name="yolox-nano").get_model()
    for m in model.modules():  # non-trivial BN statistics so that fusion has something to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.running_mean, -0.2, 0.2)
            torch.nn.init.uniform_(m.running_var, 0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def test_fuse_model_matches_unfused(nano):
    import copy
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        ref = nano(x)
        fused = fuse_model(copy.deepcopy(nano))
        out = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_load_ckpt_round_trip_from_file(nano, tmp_path):
    from detcore.training.checkpoints import save_atomic
    path = tmp_path / "nano.pth"
    save_atomic({"model": nano.state_dict(), "start_epoch": 3}, path)
    fresh = get_exp(exp_name="yolox-nano").get_model()
    load_ckpt(fresh, str(path))
    for key, value in nano.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    load_ckpt(fresh, nano.state_dict())  # a bare state dict is accepted as well


def test_load_ckpt_bad_inputs(nano, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_ckpt(nano, tmp_path / "missing.pth")
    with pytest.raises(UserError, match="expected a state dict"):
        load_ckpt(nano, [1, 2])
    with pytest.raises(UserError, match=r"missing keys: head\.stems\.0\.conv\.weight"):
        sd = dict(nano.state_dict())
        del sd["head.stems.0.conv.weight"]
        load_ckpt(nano, {"model": sd})


def test_get_model_info_reports_params_and_flops(nano):
    info = get_model_info(nano, (416, 416))
    assert info.startswith("Params: 0.91M, Gflops: ")
    gflops = float(info.rsplit(" ", 1)[1])
    assert 0.9 < gflops < 1.2  # upstream model zoo lists 1.08 GFLOPs for yolox-nano at 416
    assert not nano.training


def test_silu_trains_without_cloning_its_input():
    """BaseConv's SiLU is out of place: an in-place one clones its input under autograd (its
    backward needs it), a full copy of every activation in every training step."""
    from yolox.models.network_blocks import BaseConv
    block = BaseConv(4, 8, 3, 1).train()
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    with torch.profiler.profile() as prof:
        block(x).sum().backward()
    names = [e.name for e in prof.events()]
    assert "aten::silu" in names and "aten::silu_" not in names and "aten::clone" not in names, names
    with torch.no_grad():   # same values as the in-place form
        assert torch.equal(block(x), torch.nn.functional.silu(block.bn(block.conv(x)), inplace=True))


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_upsample2x_backward_reads_a_dense_gradient(fmt):
    """The necks concatenate each upsampled map, so its gradient arrives as a channel slice of the
    concatenation's; Upsample2x hands ATen's backward a dense copy in the input's layout (the slow
    strided path it avoids is timed in the class docstring). Values and gradients stay
    nn.Upsample's bit for bit."""
    from yolox.models.network_blocks import Upsample2x
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4).contiguous(memory_format=fmt).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    other = torch.randn(2, 2, 10, 8).contiguous(memory_format=fmt)
    weight = torch.randn(2, 5, 10, 8).contiguous(memory_format=fmt)
    y, y_ref = Upsample2x()(x), torch.nn.Upsample(scale_factor=2, mode="nearest")(x_ref)
    assert torch.equal(y, y_ref)
    with RecordOps() as ops:
        (torch.cat([y, other], 1) * weight).sum().backward()
    (torch.cat([y_ref, other], 1) * weight).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    grads = [args[0] for args in ops.args_of("aten.upsample_nearest2d_backward")]
    assert len(grads) == 1 and grads[0].is_contiguous(memory_format=fmt), [g.stride() for g in grads]
    with torch.no_grad():  # nothing hooked without autograd (inference, ONNX export)
        assert Upsample2x()(x)._backward_hooks is None
