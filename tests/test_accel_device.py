"""Device flags, resolution and their one-line errors (CPU machine, no accelerator needed)."""
import argparse

import pytest
import torch

import accel
from accel.errors import UserError, cli_entry


def parse(argv):
    return accel.add_device_args(argparse.ArgumentParser()).parse_args(argv)


def test_default_and_explicit_cpu():
    assert accel.resolve_device(parse([])) == torch.device("cpu")
    assert accel.resolve_device(parse(["--device", "cpu"])) == torch.device("cpu")


@pytest.mark.parametrize("alias", ["--hpu", "--use_hpu", "--use-hpu"])
def test_hpu_aliases_share_one_dest(alias):
    args = parse([alias])
    assert args.use_hpu is True and args.device is None


def test_unknown_device_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--device", "tpu"])
    assert exc.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_cuda_unavailable_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as err:
        accel.resolve_device(parse(["--device", "cuda"]))
    assert str(err.value) == "--device cuda requested but torch.cuda.is_available() is False"


@pytest.mark.parametrize("argv", [["--device", "cpu", "--hpu"], ["--device", "cuda", "--use_hpu"]])
def test_conflicting_device_flags(argv):
    with pytest.raises(UserError, match=f"--device {argv[1]} conflicts with --hpu"):
        accel.resolve_device(parse(argv))


def test_cli_entry_prints_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    @cli_entry
    def main(argv):
        accel.resolve_device(parse(argv))

    with pytest.raises(SystemExit) as exc:
        main(["--device", "cuda"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --device cuda requested but torch.cuda.is_available() is False\n"


@pytest.mark.parametrize("value,lazy", [(None, True), ("1", True), ("0", False), (" 0 ", False)])
def test_lazy_mode_from_env(monkeypatch, value, lazy):
    if value is None:
        monkeypatch.delenv("PT_HPU_LAZY_MODE", raising=False)
    else:
        monkeypatch.setenv("PT_HPU_LAZY_MODE", value)
    assert accel.lazy_mode() is lazy


def test_is_hpu_and_off_hpu_noops():
    assert accel.is_hpu("hpu") and accel.is_hpu(torch.device("hpu"))
    assert not accel.is_hpu("cpu") and not accel.is_hpu(torch.device("cuda", 0))
    accel.mark_step(torch.device("cpu"))   # must not try to import habana_frameworks
    accel.synchronize(torch.device("cpu"))


def test_cuda_picks_the_local_rank_gpu(monkeypatch):
    """No GPU here: the CUDA calls are stubbed; 4 ranks on 2 GPUs wrap round to cuda:1."""
    picked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert accel.resolve_device(parse(["--device", "cuda"])) == torch.device("cuda", 1)
    assert picked == [1]
