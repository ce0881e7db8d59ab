"""The network inputs of the torch-free runtime, in numpy (+ Pillow when installed).

- YOLOX: ``detcore.deploy.letterbox.letterbox`` (114 padding, as ``ValTransform``; the same function
  as training and the PyTorch demo); ``IMAGENET_MEAN`` / ``IMAGENET_STD`` for its ``--legacy`` input.
- SSD300: ``ssd_input``, Pillow's bilinear resize to 300 (``pil_bilinear_resize``: Pillow itself,
  or its algorithm in numpy without it) + ImageNet normalisation, as ``ssd.data.to_normalised_tensor``.
"""
import math

import numpy as np

SSD_SIZE = 300
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _pillow():
    """PIL.Image when Pillow is installed, else None (the numpy filter below stands in)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _bilinear_taps(in_size, out_size):
    """Pillow's antialiased bilinear filter along one axis (libImaging/Resample.c
    ``precompute_coeffs`` + ``normalize_coeffs_8bpc``): per output pixel the first source index
    of every tap and its 22-bit fixed-point weight, as ``[out, taps]`` arrays."""
    bits = 22
    scale = in_size / out_size
    support = max(scale, 1.0)                     # the filter widens when shrinking: antialiasing
    taps = int(math.ceil(support)) * 2 + 1
    centre = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    idx = lo[:, None] + np.arange(taps)
    weight = np.clip(1.0 - np.abs((idx - centre[:, None] + 0.5) * (1.0 / support)), 0.0, None)
    weight *= idx < hi[:, None]
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=weight, where=total != 0)
    return np.minimum(idx, in_size - 1), np.floor(weight * (1 << bits) + 0.5), bits


def _resample_axis(img, out_size, axis):
    """One fixed-point pass of Pillow's filter along ``axis`` (0 rows, 1 columns) of HxWxC
    uint8-valued float64 data; float64 holds the integer sums exactly (< 2^31)."""
    idx, weight, bits = _bilinear_taps(img.shape[axis], out_size)
    if axis == 1:
        acc = np.einsum("hotc,ot->hoc", img[:, idx], weight)
    else:
        acc = np.einsum("otwc,ot->owc", img[idx], weight)
    return np.clip(np.floor((acc + (1 << (bits - 1))) / (1 << bits)), 0, 255)


def pil_bilinear_resize(rgb, size):
    """``rgb`` (HxWx3 uint8) resized to ``size`` (h, w) as ``PIL.Image.resize(BILINEAR)`` does,
    which is what SSD's evaluation and demo feed the network. Pillow itself when installed
    (bit-exact by construction); otherwise its documented algorithm in numpy (horizontal pass,
    then vertical): equal to Pillow for a resize along one axis, and within one grey level for
    both, because recent Pillow builds pick the order of the two passes themselves."""
    image_module = _pillow()
    if image_module is not None:
        pil = image_module.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(pil.resize((size[1], size[0]), image_module.BILINEAR))
    out = rgb.astype(np.float64)
    if out.shape[1] != size[1]:
        out = _resample_axis(out, size[1], axis=1)
    if out.shape[0] != size[0]:
        out = _resample_axis(out, size[0], axis=0)
    return out.astype(np.uint8)


def ssd_input(bgr):
    """SSD300's eval input for a BGR image: RGB, Pillow-bilinear to 300x300, /255, ImageNet
    normalisation, as float32 1x3x300x300 (``ssd.data.to_normalised_tensor``)."""
    rgb = pil_bilinear_resize(np.ascontiguousarray(bgr[:, :, ::-1]), (SSD_SIZE, SSD_SIZE))
    x = (rgb.astype(np.float32) / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
