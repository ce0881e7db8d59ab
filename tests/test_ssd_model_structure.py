"""SSD300: reference state-dict names/shapes, output shapes, backbone surgery, init, backbone loading."""
import json
import math

import pytest
import torch
import torchvision

from accel.errors import UserError
from ssd import SSD300
from ssd.model import load_backbone_weights
from yolox_tools import REFERENCE_DIR

MANIFEST = REFERENCE_DIR / "ssd300_resnet34_state_dict.json"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SSD300(label_num=81).eval()


@pytest.fixture(scope="module")
def resnet34_pth(tmp_path_factory):
    torch.manual_seed(1)
    state = torchvision.models.resnet34(weights=None).state_dict()
    path = tmp_path_factory.mktemp("rn34") / "resnet34.pth"
    torch.save(state, path)
    return path, state


def test_state_dict_matches_reference_manifest(model):
    reference = json.loads(MANIFEST.read_text())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(reference) == 218
    assert sorted(ours) == sorted(reference)
    assert ours == reference


def test_state_dict_matches_spec_tables(model):
    """The same check without the shared manifest: extra/head table by hand, backbone from torchvision."""
    expected = {}
    extra = [(256, 256, 512), (512, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256)]
    for i, (cin, mid, cout) in enumerate(extra):
        expected.update({f"additional_blocks.{i}.0.weight": [mid, cin, 1, 1], f"additional_blocks.{i}.0.bias": [mid],
                         f"additional_blocks.{i}.2.weight": [cout, mid, 3, 3], f"additional_blocks.{i}.2.bias": [cout]})
    for i, (nd, c) in enumerate(zip([4, 6, 6, 6, 4, 4], [256, 512, 512, 256, 256, 256])):
        expected.update({f"loc.{i}.weight": [nd * 4, c, 3, 3], f"loc.{i}.bias": [nd * 4],
                         f"conf.{i}.weight": [nd * 81, c, 3, 3], f"conf.{i}.bias": [nd * 81]})
    prefixes = {"conv1.": "model.layer1.0.", "bn1.": "model.layer1.1.", "layer1.": "model.layer1.4.",
                "layer2.": "model.layer1.5.", "layer3.": "model.layer2.0."}
    for key, value in torchvision.models.resnet34(weights=None).state_dict().items():
        for src, dst in prefixes.items():
            if key.startswith(src):
                expected[dst + key[len(src):]] = list(value.shape)
    assert len(expected) == 218
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected


def test_parameter_count_and_heads(model):
    # heads: 3x3 convs with num_defaults * 4 and num_defaults * 81 outputs over 256/512/512/256/256/256
    for i, (nd, c) in enumerate(zip([4, 6, 6, 6, 4, 4], [256, 512, 512, 256, 256, 256])):
        assert model.loc[i].weight.shape == (nd * 4, c, 3, 3)
        assert model.conf[i].weight.shape == (nd * 81, c, 3, 3)
    small = SSD300(label_num=5)
    assert small.conf[0].weight.shape == (20, 256, 3, 3)


def test_forward_shapes_and_feature_maps(model):
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
             for b in [model.model, *model.additional_blocks]]
    with torch.no_grad():
        ploc, plabel = model(torch.randn(2, 3, 300, 300))
    for h in hooks:
        h.remove()
    assert ploc.shape == (2, 4, 8732) and plabel.shape == (2, 81, 8732)
    assert sizes == [(256, 38, 38), (512, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]


def test_conv4_1_is_not_strided(model):
    block = model.model.layer2[0][0]
    assert block.conv1.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    assert model.model.layer1[5][0].conv1.stride == (2, 2)  # conv3_1 keeps its stride


def test_extra_layers_and_heads_are_xavier_uniform(model):
    for layer in (*model.additional_blocks, *model.loc, *model.conf):
        for param in layer.parameters():
            if param.dim() > 1:
                fan_in = param.shape[1] * param[0, 0].numel()
                fan_out = param.shape[0] * param[0, 0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                assert param.abs().max() <= bound
                # uniform on [-b, b] has std b / sqrt(3)
                assert abs(param.std().item() - bound / math.sqrt(3)) < 0.1 * bound


def test_load_backbone_weights_from_torchvision_pth(resnet34_pth):
    path, state = resnet34_pth
    model = SSD300(label_num=5, backbone_path=path)
    backbone = model.model
    assert torch.equal(backbone.layer1[0].weight, state["conv1.weight"])
    assert torch.equal(backbone.layer1[1].running_var, state["bn1.running_var"])
    assert torch.equal(backbone.layer1[4][2].conv2.weight, state["layer1.2.conv2.weight"])
    assert torch.equal(backbone.layer1[5][0].downsample[1].bias, state["layer2.0.downsample.1.bias"])
    assert torch.equal(backbone.layer2[0][5].bn2.running_mean, state["layer3.5.bn2.running_mean"])
    other = SSD300(label_num=5)
    load_backbone_weights(other.model, path)  # the backbone alone works too
    assert torch.equal(other.model.layer2[0][0].conv1.weight, state["layer3.0.conv1.weight"])


def test_bad_backbone_files_are_user_errors(tmp_path, resnet34_pth):
    model = SSD300(label_num=3)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="garbage.pth"):
        load_backbone_weights(model, garbage)
    with pytest.raises(UserError, match="does not exist"):
        load_backbone_weights(model, tmp_path / "missing.pth")
    rn18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), rn18)
    with pytest.raises(UserError, match="resnet34 state dict"):
        load_backbone_weights(model, rn18)
    _, state = resnet34_pth
    bad = dict(state)
    bad["layer3.1.conv1.weight"] = torch.zeros(3, 3)
    wrong = tmp_path / "wrong_shape.pth"
    torch.save(bad, wrong)
    with pytest.raises(UserError, match="layer3.1.conv1.weight"):
        load_backbone_weights(model, wrong)
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(UserError, match="state dict"):
        load_backbone_weights(model, tensor_file)
    with pytest.raises(UserError, match="label_num"):
        SSD300(label_num=1)
