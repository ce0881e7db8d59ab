"""A non-editable ``pip install .`` works away from the checkout (issue 27): the module commands
(``python -m yolox.tools.train/eval/demo/export_onnx``, ``python -m ssd.train``), ``-n NAME`` on
the packaged exps, the packaged HPU op lists and a console script, all run from a folder outside
the checkout by a venv holding the installed copy.

How the installed copy is proven to be the one running: the checkout's files are copied to a
temporary source folder, installed from there into a fresh venv (``--system-site-packages`` for
torch and the other dependencies of the main environment, ``--no-deps`` so nothing is fetched),
and the source copy is deleted before anything runs; no PYTHONPATH, cwd outside the checkout.
The main environment's editable install (if any) cannot win: its finder is appended after the
path finder, which finds the venv's site-packages first. test_imports_the_installed_copy checks
each package's ``__file__`` anyway.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yolox_tools import ROOT, TINY

LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
               "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE")
BIN = "Scripts" if os.name == "nt" else "bin"


def _checkout_files():
    """Tracked and not-ignored untracked files of the checkout: what ``pip install .`` of a
    fresh clone with the current edits would see (no build/, *.egg-info, datasets, outputs)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is needed to list the checkout's files")
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


class Venv:
    def __init__(self, root, work):
        self.root, self.work = root, work
        self.python = root / BIN / "python"
        self.env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and k != "PYTHONPATH"}
        self.env["PATH"] = f"{root / BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["OMP_NUM_THREADS"] = "1"

    def run(self, *cmd, timeout=180):
        """Run ``cmd`` in the work folder (outside the checkout); ``python`` is the venv's."""
        cmd = [str(self.python) if c == "python" else str(c) for c in cmd]
        proc = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """The project installed non-editably into a fresh venv; its source copy already deleted."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    for rel in _checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    root = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
                   check=True, timeout=120)
    # pip and setuptools come from the main environment (system site-packages); the wheel is built
    # from the copy with them, nothing is downloaded
    pip = subprocess.run([str(root / BIN / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                          "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check",
                          "-q", str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    shutil.rmtree(src)
    work = base / "work"
    work.mkdir()
    return Venv(root, work)


@pytest.fixture(scope="module")
def data(venv):
    """The synthetic set written by the detkit-make-shapes console script."""
    venv.run("detkit-make-shapes", "--out", "data", "--num-train", "8", "--num-val", "4", "--seed", "0")
    return venv.work / "data"


def test_imports_the_installed_copy(venv):
    out = venv.run("python", "-c", (
        "import sys, accel, detcore, ssd, yolox, yolox.tools.train\n"
        "from yolox.exp.build import exps_dir\n"
        "from accel.oplists import DEFAULT_BF16_OPS, DEFAULT_FP32_OPS\n"
        "for m in (accel, detcore, ssd, yolox, yolox.tools.train):\n"
        "    print('module', m.__file__)\n"
        "print('exps', exps_dir())\n"
        "print('ops', DEFAULT_BF16_OPS, DEFAULT_BF16_OPS.is_file(), DEFAULT_FP32_OPS.is_file())\n"
        "print('path', *sys.path)\n"))
    site = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("module"))
    site = Path(site).parents[1]
    assert venv.root in site.parents, out
    assert all(ln.split()[1].startswith(str(site)) for ln in out.splitlines() if ln.startswith("module")), out
    assert f"exps {site / 'yolox' / 'exp'}" in out                  # -n finds the packaged exps
    assert f"ops {site / 'accel' / 'ops_bf16_yolox.txt'} True True" in out   # --hmp's default lists
    path_line = next(ln for ln in out.splitlines() if ln.startswith("path"))
    assert str(ROOT) not in path_line.split()


def test_yolox_module_commands_train_eval_demo_export(venv, data):
    """Upstream HEAD's module paths with -n yolox-nano (80 classes; the shapes set uses 4 of
    them), two iterations at 160 px, then eval, the image demo and the ONNX export of the result."""
    tiny = [*TINY, "output_dir", "out"]
    log = venv.run("python", "-m", "yolox.tools.train", "-n", "yolox-nano", "-b", "4", "--data_dir", data,
                   "--device", "cpu", "--seed", "0", *tiny, "steps", "2")
    assert "training done" in log
    ckpt = venv.work / "out" / "yolox_nano" / "best_ckpt.pth"
    assert ckpt.is_file()
    out = venv.run("python", "-m", "yolox.tools.eval", "-n", "yolox-nano", "-b", "4", "--data_dir", data,
                   "--device", "cpu", *tiny)
    assert "AP50_95: " in out and "\nAP50: " in out
    out = venv.run("python", "-m", "yolox.tools.demo", "image", "-n", "yolox-nano", "-c", ckpt, "--path",
                   data / "val2017", "--device", "cpu", "--save_result", *tiny)
    drawn = list((venv.work / "out" / "yolox_nano" / "vis_res").rglob("*.jpg"))
    assert "saved drawn images under" in out and len(drawn) == 4
    venv.run("python", "-m", "yolox.tools.export_onnx", "-n", "yolox-nano", "-c", ckpt, "--output-name",
             "out/nano.onnx", "--no-onnxsim", *tiny)
    assert (venv.work / "out" / "nano.onnx").stat().st_size > 100_000


def test_yolox_devices_relaunch_installed(venv, data):
    """-d 2 from ``python -m yolox.tools.train`` relaunches the module under torchrun (there is
    no tools/train.py in an installed copy) and both ranks train."""
    log = venv.run("python", "-m", "yolox.tools.train", "-n", "yolox-nano-shapes", "-d", "2", "-b", "4",
                   "--data_dir", data, "--device", "cpu", "--seed", "0", *TINY, "output_dir", "out_ddp",
                   "steps", "2")
    assert "--nproc_per_node=2 -m yolox.tools.train -n yolox-nano-shapes" in log
    assert "over 2 process(es)" in log and "training done" in log


def test_ssd_module_command(venv, data):
    """python -m ssd.train, one iteration from scratch: the SSD entry point needs no checkout."""
    log = venv.run("python", "-m", "ssd.train", "-d", data, "-b", "1", "-e", "1", "--val-interval", "100",
                   "--num-workers", "0", "-s", "0", "--end-iteration", "1", "--pretrained-backbone", "none",
                   "--device", "cpu", "--output-dir", "ssd_out")
    assert "finished at iteration 1" in log
    assert (venv.work / "ssd_out" / "ssd300_latest.pth").is_file()


def _relaunch_cmd(monkeypatch, main, main_module):
    """The torchrun command ``launch_local(2, main, ...)`` would exec with ``main_module`` as the
    process's ``__main__``."""
    from accel import distributed

    calls = []
    monkeypatch.setattr(distributed.os, "execv", lambda exe, cmd: calls.append(cmd))
    monkeypatch.setitem(sys.modules, "__main__", main_module)
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    distributed.launch_local(2, main, ["-n", "yolox-nano"])
    (cmd,) = calls
    return cmd[cmd.index("--nproc_per_node=2") + 1:]


def test_devices_relaunch_repeats_how_the_process_started(monkeypatch, tmp_path):
    """--devices N relaunches under torchrun what started this process: ``-m yolox.tools.train``
    for the module (an installed copy has no tools/train.py to point at), the file for a wrapper
    or console script (tools/train.py puts its checkout first on sys.path), ``-m`` otherwise."""
    import types

    from yolox.tools import train

    as_module = types.ModuleType("__main__")
    as_module.__spec__ = types.SimpleNamespace(name="yolox.tools.train")
    as_module.__file__ = train.__file__
    plain_main = lambda: None  # noqa: E731
    plain_main.__module__ = "__main__"   # python -m yolox.tools.train: main lives in __main__
    assert _relaunch_cmd(monkeypatch, plain_main, as_module) == ["-m", "yolox.tools.train", "-n", "yolox-nano"]

    script = types.ModuleType("__main__")       # tools/train.py or bin/detkit-train
    script.__spec__, script.__file__, script.main = None, str(tmp_path / "detkit-train"), train.main
    assert _relaunch_cmd(monkeypatch, train.main, script) == [str(tmp_path / "detkit-train"), "-n", "yolox-nano"]

    as_file = types.ModuleType("__main__")      # python site-packages/yolox/tools/train.py
    as_file.__spec__, as_file.__file__ = None, train.__file__
    assert _relaunch_cmd(monkeypatch, plain_main, as_file) == [train.__file__, "-n", "yolox-nano"]

    other = types.ModuleType("__main__")        # an in-process caller (pytest, a notebook)
    other.__spec__ = types.SimpleNamespace(name="pytest")
    assert _relaunch_cmd(monkeypatch, train.main, other) == ["-m", "yolox.tools.train", "-n", "yolox-nano"]
