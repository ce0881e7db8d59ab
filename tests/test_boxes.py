"""detcore/boxes.py: the four box conversions on numpy arrays and torch tensors, values counted by hand.

Box A: corners (10, 20) and (50, 40): width 40, height 20, centre (30, 30).
Box B: corners (0, 0) and (3, 5): width 3, height 5, centre (1.5, 2.5).
Every value is a small dyadic number, so each conversion and each round trip is exact."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detcore.boxes import cxcywh2xyxy, xywh2xyxy, xyxy2cxcywh, xyxy2xywh

ROOT = Path(__file__).resolve().parents[1]
XYXY = [[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 3.0, 5.0]]
XYWH = [[10.0, 20.0, 40.0, 20.0], [0.0, 0.0, 3.0, 5.0]]
CXCYWH = [[30.0, 30.0, 40.0, 20.0], [1.5, 2.5, 3.0, 5.0]]
CASES = [(xyxy2xywh, XYXY, XYWH), (xywh2xyxy, XYWH, XYXY), (xyxy2cxcywh, XYXY, CXCYWH), (cxcywh2xyxy, CXCYWH, XYXY)]


def as_numpy(rows, dtype=np.float32):
    return np.array(rows, dtype=dtype)


def as_torch(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


@pytest.mark.parametrize("convert,given,expected", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_values_dtype_and_a_new_array(convert, given, expected, dtype):
    boxes = as_numpy(given, dtype)
    out = convert(boxes)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (2, 4)
    assert out.tolist() == expected
    assert boxes.tolist() == given and not np.shares_memory(out, boxes)     # the input is not written


@pytest.mark.parametrize("convert,given,expected", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_values_dtype_and_a_new_tensor(convert, given, expected, dtype):
    boxes = as_torch(given, dtype)
    out = convert(boxes)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (2, 4)
    assert out.tolist() == expected
    assert boxes.tolist() == given and out.data_ptr() != boxes.data_ptr()


@pytest.mark.parametrize("convert,given,expected", CASES)
def test_leading_dimensions_one_box_and_extra_columns(convert, given, expected):
    batch = as_numpy([given, given[::-1]])                                 # [2, 2, 4]
    assert convert(batch).tolist() == [expected, expected[::-1]]
    assert convert(as_torch(given[0])).tolist() == expected[0]               # a single box [4]
    with_class = np.concatenate([as_numpy(given), [[7.0], [9.0]]], axis=1)   # [2, 5]: column 4 rides along
    assert convert(with_class).tolist() == [e + [c] for e, c in zip(expected, (7.0, 9.0))]


def test_integer_corners_to_corner_and_size():
    assert xyxy2xywh(np.array([[10, 20, 50, 40]])).tolist() == [[10, 20, 40, 20]]
    assert xywh2xyxy(torch.tensor([[10, 20, 40, 20]])).tolist() == [[10, 20, 50, 40]]


def test_round_trips():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 500, (50, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(1, 300, (50, 2))], axis=1)
    for to, back, other in ((xyxy2xywh, xywh2xyxy, XYWH), (xyxy2cxcywh, cxcywh2xyxy, CXCYWH)):
        np.testing.assert_allclose(back(to(boxes)), boxes, rtol=0, atol=1e-9)
        t = torch.from_numpy(boxes)
        torch.testing.assert_close(back(to(t)), t, rtol=0, atol=1e-9)
        assert back(to(as_numpy(XYXY))).tolist() == XYXY                  # exact on the hand boxes
        assert to(back(as_torch(other))).tolist() == other


def test_autograd_follows_a_tensor():
    """cx = x1 + (x2 - x1) * 0.5, so d cx / d x1 = d cx / d x2 = 0.5; w = x2 - x1: -1 and +1."""
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]], requires_grad=True)
    out = xyxy2cxcywh(boxes)
    (out[:, 0] + out[:, 2]).sum().backward()
    assert boxes.grad.tolist() == [[0.5 - 1.0, 0.0, 0.5 + 1.0, 0.0]]


def test_imports_no_torch():
    code = "import sys, detcore.boxes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
