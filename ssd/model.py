"""SSD300 with a truncated ResNet-34 backbone; module names match the MLPerf reference checkpoints.

Backbone: torchvision ResNet-34 up to conv4_x (``layer3``) with conv4_1 not strided, so the
300x300 input gives a 38x38x256 map. Extra layers conv7..conv11 (no batch-norm) give 19, 10, 5, 3
and 1; each of the six maps feeds a 3x3 loc head and a 3x3 conf head.
"""
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from loguru import logger

from detcore.training import checkpoints as checkpoint
from accel.errors import UserError

OUT_CHANNELS = [256, 512, 512, 256, 256, 256]
NUM_DEFAULTS = [4, 6, 6, 6, 4, 4]
# (bottleneck channels, stride, padding) of each extra block's 3x3 conv, per the spec's head table.
EXTRA_BLOCKS = [(256, 2, 1), (256, 2, 1), (128, 2, 1), (128, 1, 0), (128, 1, 0)]
# torchvision resnet34 key prefix -> our backbone prefix (children 0, 1, 4, 5 of layer1; layer3).
_TV_PREFIXES = {"conv1.": "layer1.0.", "bn1.": "layer1.1.", "layer1.": "layer1.4.",
                "layer2.": "layer1.5.", "layer3.": "layer2.0."}


class ResNet34Backbone(nn.Module):
    """ResNet-34 conv1..conv4_x; ``layer1`` = stem + conv2_x + conv3_x, ``layer2`` = conv4_x."""

    def __init__(self):
        super().__init__()
        rn34 = torchvision.models.resnet34(weights=None)
        self.layer1 = nn.Sequential(*list(rn34.children())[:6])
        self.layer2 = nn.Sequential(*list(rn34.children())[6:7])
        first = self.layer2[0][0]
        first.conv1.stride = (1, 1)
        first.downsample[0].stride = (1, 1)

    def forward(self, x):
        return self.layer2(self.layer1(x))


class SSD300(nn.Module):
    """``SSD300(label_num)(images N x 3 x 300 x 300)`` -> (ploc N x 4 x 8732, plabel N x label_num x 8732)."""

    def __init__(self, label_num=81, backbone_path=None):
        super().__init__()
        if label_num < 2:
            raise UserError(f"SSD300: label_num must count the background too (>= 2), got {label_num}")
        self.label_num = label_num
        self.model = ResNet34Backbone()
        if backbone_path is not None:
            load_backbone_weights(self.model, backbone_path)
        blocks = []
        for (mid, stride, padding), cin, cout in zip(EXTRA_BLOCKS, OUT_CHANNELS[:-1], OUT_CHANNELS[1:]):
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, mid, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, kernel_size=3, stride=stride, padding=padding),
                nn.ReLU(inplace=True),
            ))
        self.additional_blocks = nn.ModuleList(blocks)
        self.loc = nn.ModuleList(
            nn.Conv2d(c, nd * 4, kernel_size=3, padding=1) for nd, c in zip(NUM_DEFAULTS, OUT_CHANNELS))
        self.conf = nn.ModuleList(
            nn.Conv2d(c, nd * label_num, kernel_size=3, padding=1) for nd, c in zip(NUM_DEFAULTS, OUT_CHANNELS))
        self._init_weights()

    def _init_weights(self):
        """Xavier-uniform on every extra-layer and head weight (biases keep PyTorch's default)."""
        for layer in (*self.additional_blocks, *self.loc, *self.conf):
            for param in layer.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)

    def backbone_stages(self):
        """The backbone's ResNet stages, first to last: stem (conv1 + bn1), conv2_x, conv3_x, conv4_x."""
        seq = self.model.layer1
        return [nn.ModuleList([seq[0], seq[1]]), seq[4], seq[5], self.model.layer2]

    def freeze_backbone(self, trainable_stages):
        """Keep only the last ``trainable_stages`` of the 4 backbone stages trainable (torchvision's
        ``trainable_backbone_layers``; 4 = all, the reference). A frozen stage gets no gradients, so
        its backward is never computed (a fully frozen backbone makes a CPU step ~2.8x cheaper);
        its batch-norm statistics still follow the data in train mode."""
        stages = self.backbone_stages()
        if not 0 <= trainable_stages <= len(stages):
            raise UserError(f"--trainable-backbone-layers must be 0..{len(stages)}, got {trainable_stages}")
        for stage in stages[:len(stages) - trainable_stages]:
            stage.requires_grad_(False)

    def forward(self, images):
        x = self.model(images)
        feats = [x]
        for block in self.additional_blocks:
            x = block(x)
            feats.append(x)
        n = images.shape[0]
        # Viewing N x (A*k) x H x W as N x k x (A*H*W) gives the DefaultBoxes order (anchor, y, x).
        locs = torch.cat([head(f).reshape(n, 4, -1) for head, f in zip(self.loc, feats)], dim=2)
        confs = torch.cat([head(f).reshape(n, self.label_num, -1) for head, f in zip(self.conf, feats)], dim=2)
        # fp32 out, also under autocast: the loss and the box decoding need it (bf16 would
        # quantise the box offsets), and it is the one place that says so
        return locs.float(), confs.float()


def _backbone_state_from_torchvision(state, path):
    """Rename a torchvision resnet34 state dict to our backbone's keys (layer4 and fc are dropped)."""
    if not isinstance(state, Mapping):
        raise UserError(
            f"backbone weights {path}: expected a torchvision resnet34 state dict, got {type(state).__name__}")
    renamed = {}
    for key, value in state.items():
        for src, dst in _TV_PREFIXES.items():
            if isinstance(key, str) and key.startswith(src):
                renamed[dst + key[len(src):]] = value
                break
    return renamed


def _torchvision_name(key):
    """Our backbone key -> the torchvision resnet34 key it is loaded from (for error messages)."""
    for src, dst in _TV_PREFIXES.items():
        if key.startswith(dst):
            return src + key[len(dst):]
    return key


def imagenet_backbone_state():
    """torchvision's ImageNet ResNet-34, as the reference's ``resnet34(pretrained=True)``: from
    torchvision's cache under TORCH_HOME, downloaded there when online. Offline and not cached:
    one line saying which file to put where."""
    weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False), cache
    except (OSError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise UserError(f"no --pretrained-backbone given and torchvision's ImageNet ResNet-34 is neither "
                        f"cached nor downloadable ({reason}): put {cache.name} (from {weights.url}) at "
                        f"{cache}, pass --pretrained-backbone PATH, or --pretrained-backbone none to "
                        "train the backbone from scratch") from None


def load_backbone_weights(module, path, state=None):
    """Load a torchvision-format ResNet-34 ``.pth`` (weights-only; or its loaded ``state``) into
    an SSD300 or its backbone. ``num_batches_tracked`` entries are optional (the 2017
    ``resnet34-333f7ec4.pth`` of the recipe has none); keys that are not ResNet-34's fail."""
    backbone = module.model if isinstance(module, SSD300) else module
    if not isinstance(backbone, ResNet34Backbone):
        raise UserError(f"load_backbone_weights: expected an SSD300 or its backbone, got {type(module).__name__}")
    raw = checkpoint.load(path) if state is None else state
    if isinstance(raw, Mapping):
        known = set(torchvision.models.resnet34(weights=None).state_dict())
        unexpected = sorted(k for k in raw if k not in known)
        if unexpected:
            raise UserError(f"backbone weights {path}: not a torchvision resnet34 state dict "
                            f"({len(unexpected)} unexpected keys, e.g. {unexpected[0]!r})")
    state = _backbone_state_from_torchvision(raw, path)
    own = backbone.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = sorted(k for k in own if not isinstance(state.get(k), torch.Tensor))
    if missing:
        raise UserError(
            f"backbone weights {path}: not a torchvision resnet34 state dict "
            f"({len(missing)} tensors missing, e.g. {_torchvision_name(missing[0])!r})"
        )
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise UserError(
            f"backbone weights {path}: {len(wrong)} tensors have the wrong shape, e.g. "
            f"{_torchvision_name(wrong[0])!r} is {tuple(state[wrong[0]].shape)}, expected "
            f"{tuple(own[wrong[0]].shape)} (is it resnet34?)"
        )
    backbone.load_state_dict(state, strict=True)


def load_backbone_choice(net, choice):
    """``--pretrained-backbone``, as the reference: torchvision's ImageNet ResNet-34 weights unless
    told otherwise (a torchvision-format or pickled file; ``none`` = from scratch)."""
    if choice is not None and choice.lower() == "none":
        logger.info("--pretrained-backbone none: the ResNet-34 backbone starts from scratch")
        return
    if choice is None:
        state, cache = imagenet_backbone_state()
        load_backbone_weights(net, cache, state)
        logger.info(f"backbone: torchvision's ImageNet ResNet-34 ({cache})")
        return
    load_backbone_weights(net, choice)
    logger.info(f"backbone: {choice}")
