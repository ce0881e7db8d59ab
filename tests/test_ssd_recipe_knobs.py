"""The two opt-in SSD knobs of the shapes demo: a partly frozen backbone and gradient clipping."""
import pytest
import torch

from accel import Precision
from accel.errors import UserError
from ssd import SSD300


def _one_step(model, clip=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ploc, plabel = model(torch.randn(2, 3, 300, 300))
    (ploc.square().mean() + plabel.square().mean()).backward()
    Precision("cpu").step(opt, clip)
    return before


@pytest.mark.parametrize("trainable", [0, 1, 3, 4])
def test_trainable_backbone_layers_freezes_the_first_stages(trainable):
    torch.manual_seed(0)
    model = SSD300(label_num=3)
    model.freeze_backbone(trainable)
    before = _one_step(model)
    stages = model.backbone_stages()
    names = {id(p): n for n, p in model.named_parameters()}
    for i, stage in enumerate(stages):
        for p in stage.parameters():
            moved = not torch.equal(model.state_dict()[names[id(p)]], before[names[id(p)]])
            # the last `trainable` stages train; weight decay alone would move a frozen one
            assert moved == (i >= len(stages) - trainable), (i, names[id(p)])
            assert (p.grad is None) == (i < len(stages) - trainable)
    assert not torch.equal(model.conf[0].weight, before["conf.0.weight"])   # heads always train
    assert sum(p.numel() for s in stages for p in s.parameters()) == \
        sum(p.numel() for p in model.model.parameters())                     # the stages cover it all


def test_trainable_backbone_layers_out_of_range():
    with pytest.raises(UserError, match="0..4, got 5"):
        SSD300(label_num=3).freeze_backbone(5)


def test_clip_grad_norm_scales_the_step_by_hand():
    """grad (3, 4) has norm 5; clipped to 1 the SGD(lr 1) step is exactly (-0.6, -0.8)."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([3.0, 4.0])
    Precision("cpu").step(opt, 1.0)
    assert torch.allclose(p.detach(), torch.tensor([-0.6, -0.8]))
    p.grad = torch.tensor([0.3, 0.4])            # under the limit: unchanged
    Precision("cpu").step(opt, 1.0)
    assert torch.allclose(p.detach(), torch.tensor([-0.9, -1.2]))
    p.grad = torch.tensor([3.0, 4.0])            # no clipping asked: the full step
    Precision("cpu").step(opt, None)
    assert torch.allclose(p.detach(), torch.tensor([-3.9, -5.2]))
