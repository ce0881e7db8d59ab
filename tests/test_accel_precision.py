"""Precision modes on CPU: real bf16 autocast, flag mapping, errors, the step contract."""
import argparse
import contextlib
import os
import platform

import pytest
import torch
from loguru import logger

import accel
from accel.errors import UserError
from accel.precision import Precision

CPU = torch.device("cpu")


def parse(argv):
    return accel.add_precision_args(argparse.ArgumentParser()).parse_args(argv)


def test_bf16_autocast_on_cpu_runs_matmul_in_bf16():
    prec = accel.Precision.from_args(parse(["--autocast"]), CPU)
    assert prec.mode == "bf16" and prec.dtype == torch.bfloat16
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
    b = torch.arange(8, dtype=torch.float32).reshape(4, 2) / 5
    layer = torch.nn.Linear(4, 2)
    with prec.autocast():
        out = a @ b
        lin = layer(a)
    assert out.dtype == torch.bfloat16 and lin.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits: relative error well under 1 %
    assert torch.allclose(out.float(), a @ b, rtol=1e-2, atol=1e-2)
    assert (a @ b).dtype == torch.float32  # outside the context: fp32 again


def test_fp32_is_default_and_has_no_context():
    prec = accel.Precision.from_args(parse([]), CPU)
    assert prec.mode == "fp32" and prec.state_dict() == {}
    assert isinstance(prec.autocast(), contextlib.nullcontext)
    prec.load_state_dict({})


def test_hmp_off_hpu_is_bf16_autocast_with_one_log_line(monkeypatch):
    monkeypatch.setattr(accel.precision, "cpu_bf16_is_native", lambda: True)   # same line on every CPU
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    try:
        prec = accel.Precision.from_args(parse(["--hmp", "--hmp-opt-level", "O1"]), CPU)
    finally:
        logger.remove(sink)
    assert prec.mode == "bf16" and prec.hmp is None
    assert lines == ["--hmp is Habana-only; on cpu it runs as torch.autocast bf16"]
    with prec.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_missing_op_list_is_checked_off_hpu_too(tmp_path):
    missing = tmp_path / "ops.txt"
    with pytest.raises(UserError) as err:
        accel.Precision.from_args(parse(["--hmp", "--hmp-fp32", str(missing)]), CPU)
    assert str(err.value) == (f"--hmp-fp32 {missing} does not exist "
                              "(expected a text file, one op name per line)")


def test_fp16_needs_cuda():
    with pytest.raises(UserError, match=r"--fp16 needs --device cuda \(got cpu\)"):
        accel.Precision.from_args(parse(["--fp16"]), CPU)


@pytest.mark.parametrize("argv", [["--autocast", "--fp16"], ["--hmp", "--autocast"]])
def test_precision_flags_are_exclusive(argv):
    with pytest.raises(UserError, match="mutually exclusive"):
        accel.Precision.from_args(parse(argv), CPU)


def test_bad_mode_and_hmp_off_hpu_in_constructor():
    with pytest.raises(UserError, match="'fp8' is not one of fp32, bf16, fp16"):
        accel.Precision(CPU, mode="fp8")
    with pytest.raises(UserError, match="--hmp runs only on --device hpu"):
        accel.Precision(CPU, mode="bf16", hmp=True)


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_backward_and_step_updates_parameters(mode):
    """loss = sum(w * x) so dloss/dw = x and SGD(lr=0.5) gives w - 0.5 x."""
    prec = accel.Precision(CPU, mode=mode)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    x = torch.tensor([0.5, 1.0, -4.0])
    opt = torch.optim.SGD([w], lr=0.5)
    with prec.autocast():
        loss = (w * x).sum()
    prec.backward_and_step(loss, opt)
    assert torch.allclose(w.detach(), torch.tensor([0.75, -2.5, 5.0]))


def test_malformed_op_list_names_line(tmp_path):
    ops = tmp_path / "ops.txt"
    ops.write_text("conv2d\n\nmax_pool2d, mm\n")
    with pytest.raises(UserError) as err:
        accel.Precision.from_args(parse(["--hmp", "--hmp-bf16", str(ops)]), CPU)
    assert str(err.value).startswith(f"--hmp-bf16 {ops} line 3: 'max_pool2d, mm' is not an op name")


def _warnings_building(mode):
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        accel.Precision(CPU, mode)
    finally:
        logger.remove(sink)
    return lines


def test_bf16_on_a_cpu_without_bf16_kernels_warns_once(monkeypatch):
    monkeypatch.setattr(accel.precision, "cpu_bf16_is_native", lambda: False)
    lines = _warnings_building("bf16")
    assert len(lines) == 1 and "no native kernels" in lines[0] and "drop --autocast/--hmp" in lines[0]
    assert _warnings_building("fp32") == []                   # fp32 has nothing to warn about
    monkeypatch.setattr(accel.precision, "cpu_bf16_is_native", lambda: True)
    assert _warnings_building("bf16") == []                   # AVX-512 BF16 / AMX: silent


@pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"),
                    reason="reads x86 feature flags from /proc/cpuinfo (Linux x86-64)")
def test_bf16_probe_agrees_with_the_cpu_flags():
    """oneDNN takes bf16 with AVX-512 BW+VL+DQ, AVX-NE-CONVERT or AMX; an AVX2-only part has none."""
    flags = next((set(line.split(":", 1)[1].split()) for line in open("/proc/cpuinfo")
                  if line.startswith("flags")), set())
    native = bool(flags & {"avx_ne_convert", "amx_bf16"}) or {"avx512bw", "avx512vl", "avx512dq"} <= flags
    assert accel.precision.cpu_bf16_is_native() == native, sorted(flags & {"avx2", "avx512bw", "amx_bf16"})


# ------------------------------------------------------------- autocast carries the requested dtype
# ``Precision.autocast()`` carries the requested dtype whatever the device's default autocast
# dtype is (cpu defaults to bf16, cuda to fp16).

@pytest.fixture
def autocast_defaults():
    """Restore the process's default autocast dtypes after a test changes them."""
    saved = {d: torch.get_autocast_dtype(d) for d in ("cpu", "cuda")}
    yield
    for d, dtype in saved.items():
        torch.set_autocast_dtype(d, dtype)


def test_cpu_autocast_carries_bf16_even_when_the_default_is_fp16(autocast_defaults):
    torch.set_autocast_dtype("cpu", torch.float16)     # someone changed the process default
    with Precision("cpu", "bf16").autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("mode,dtype,other", [("bf16", torch.bfloat16, torch.float16),
                                              ("fp16", torch.float16, torch.bfloat16)])
def test_cuda_autocast_carries_the_requested_dtype(autocast_defaults, mode, dtype, other, recwarn):
    """cuda autocast defaults to fp16: bf16 must be asked for explicitly (and fp16 too, whatever
    the default was set to). Checked on the context object, which works without a GPU."""
    torch.set_autocast_dtype("cuda", other)
    ctx = Precision("cuda", mode).autocast()
    assert ctx.device == "cuda" and ctx.fast_dtype == dtype
    if torch.cuda.is_available():
        with ctx:
            assert torch.get_autocast_dtype("cuda") == dtype
