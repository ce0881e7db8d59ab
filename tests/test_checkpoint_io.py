"""detcore.training.checkpoints, detcore.files and accel.errors: atomic writes, safe loads, one-line CLI errors."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detcore.training import checkpoints as checkpoint
from accel.errors import UserError


def test_save_atomic_roundtrip_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "ckpt.pth"
    checkpoint.save_atomic({"w": torch.arange(3), "epoch": 2}, path)
    assert sorted(os.listdir(path.parent)) == ["ckpt.pth"]
    got = checkpoint.load(path)
    assert got["epoch"] == 2 and torch.equal(got["w"], torch.arange(3))


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    checkpoint.save_atomic({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        checkpoint.save_atomic({"v": Unpicklable()}, path)
    assert checkpoint.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_load_missing_and_corrupt_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pth"):
        checkpoint.load(bad)


def test_cli_entry_prints_one_line_and_exits_2(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text(textwrap.dedent("""
        from accel.errors import UserError, cli_entry

        @cli_entry
        def main():
            raise UserError("--data_dir /x does not exist\\n(expected a COCO folder)")

        main()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --data_dir /x does not exist (expected a COCO folder)"
