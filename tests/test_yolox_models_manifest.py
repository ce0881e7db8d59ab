"""Upstream checkpoint compatibility: every model's state dict matches the reference manifest."""
import json

import pytest
import torch

from accel.errors import UserError
from yolox.exp import get_exp
from yolox.utils import load_ckpt
from yolox_tools import REFERENCE_DIR, ROOT

REF_DIR = REFERENCE_DIR   # tests/data/reference: in the repository, so a plain clone runs these
SHARED_REF_DIR = ROOT.parent / "shared" / "reference"   # where they were copied from
# Parameter counts of the released checkpoints (model zoo: 0.91M, 5.06M, 9.0M, 25.3M, 54.2M, 99.1M, 63.7M).
PARAMS = {
    "yolox-nano": 912_159, "yolox-tiny": 5_055_855, "yolox-s": 8_968_255, "yolox-m": 25_326_495,
    "yolox-l": 54_208_895, "yolox-x": 99_071_455, "yolov3": 63_724_767,
}


def test_in_repo_manifests_equal_the_shared_reference():
    """tests/data/reference holds byte-identical copies of every manifest in ../shared/reference
    (the folder beside the checkout they were copied from; a plain clone has no such folder)."""
    if not SHARED_REF_DIR.is_dir():
        pytest.skip(f"{SHARED_REF_DIR} does not exist (a plain clone): "
                    "nothing to compare the in-repo copies with")
    shared = sorted(p.name for p in SHARED_REF_DIR.glob("*.json"))
    assert shared, f"no manifests in {SHARED_REF_DIR}"
    assert sorted(p.name for p in REF_DIR.glob("*.json")) == shared
    for name in shared:
        assert (REF_DIR / name).read_bytes() == (SHARED_REF_DIR / name).read_bytes(), name


def meta_model(name):
    """Build on the meta device: shapes and names without allocating ~400 MB for yolox-x."""
    with torch.device("meta"):
        return get_exp(exp_name=name).get_model()


def manifest(name):
    return json.loads((REF_DIR / f"{name}_state_dict.json").read_text())


@pytest.mark.parametrize("name", list(PARAMS))
def test_state_dict_matches_manifest(name):
    ref = manifest(name)
    model = meta_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(ref), (sorted(set(ref) - set(ours))[:5], sorted(set(ours) - set(ref))[:5])
    assert ours == ref
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", list(PARAMS))
def test_upstream_style_checkpoint_loads_strict(name):
    """A {"model": state_dict} with exactly the manifest's keys and shapes loads through load_ckpt."""
    sd = {k: torch.empty(shape, device="meta") for k, shape in manifest(name).items()}
    load_ckpt(meta_model(name), {"model": sd})


def test_checkpoint_of_other_model_names_keys():
    sd = {k: torch.empty(shape, device="meta") for k, shape in manifest("yolov3").items()}
    with pytest.raises(UserError, match="belongs to another model") as info:
        load_ckpt(meta_model("yolox-s"), {"model": sd})
    msg = str(info.value)
    assert "missing keys: backbone.C3_n3.conv1.bn." in msg  # PAFPN-only keys
    assert "unexpected keys: backbone.backbone.dark2.1.layer1.bn." in msg  # Darknet-only keys
    assert "shape mismatch for" in msg  # shared names such as dark2.0 differ in width


def test_same_keys_other_width_is_shape_mismatch():
    sd = {k: torch.empty(shape, device="meta") for k, shape in manifest("yolox-tiny").items()}
    with pytest.raises(UserError, match=r"shape mismatch for \d+ keys"):
        load_ckpt(meta_model("yolox-s"), sd)


def test_init_matches_released_yolox():
    """BN eps 1e-3 / momentum 0.03 everywhere, cls and obj biases at the 1e-2 prior."""
    model = get_exp(exp_name="yolox-nano").get_model()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    prior = -torch.log(torch.tensor((1 - 1e-2) / 1e-2))
    for conv in list(model.head.cls_preds) + list(model.head.obj_preds):
        torch.testing.assert_close(conv.bias.detach(), prior.expand_as(conv.bias))
