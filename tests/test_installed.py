"""A non-editable ``pip install .`` works away from the checkout (issue 27): the module commands
(``python -m yolox.tools.train/eval/demo/export_onnx``, ``python -m ssd.train``), ``-n NAME`` on
the packaged exps, the packaged HPU op lists and a console script, all run from a folder outside
the checkout by a venv holding the installed copy.

How the installed copy is proven to be the one running: the checkout's files are copied to a
temporary source folder, installed from there (``pip install --no-deps``, not editable) into a
fresh venv, and the source copy is deleted before anything runs; no PYTHONPATH, cwd outside the
checkout. test_imports_the_installed_copy checks each package's ``__file__`` and ``sys.path``.

Why it builds the way it does (it must pass from the system interpreter and from a plain
``python -m venv`` alike):
- Dependencies: the fresh venv sees torch and the rest through a ``.pth`` file listing the site
  folders of the interpreter running pytest (``site.getsitepackages()`` and the user site), after
  its own site-packages. ``venv --system-site-packages`` is not used: it shows the *base*
  interpreter's site-packages, which, run from a venv, is not where torch was installed (and holds
  the base's own, often old, setuptools). Plain ``.pth`` lines add folders without running the
  ``.pth`` files inside them, so the main environment's editable install of detkit is not even
  loaded in the venv; nothing but the venv's copy can be imported.
- The wheel: setuptools < 70.1 cannot build one without the ``wheel`` package (``error: invalid
  command 'bdist_wheel'``; the setuptools 65.5 that ``python -m venv`` seeds on Python 3.11 is
  such a one). When this environment's setuptools can (>= 70.1, or ``wheel`` is installed), the
  wheel is built with it and ``--no-build-isolation --no-index``: offline, nothing downloaded.
  Otherwise pip builds it as ``pip install .`` itself does on such a machine, in an isolated
  build environment with setuptools and wheel fetched from the package index (PyPI); the project
  has no pyproject.toml, so that is pip's default build requirement. Either way ``--no-deps``:
  no runtime dependency is fetched. The venv has no pip of its own (``--without-pip``; ensurepip
  would put a bundled, old setuptools first on its path): the main environment's pip runs it.
"""
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
from importlib import metadata
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


def _site_dirs():
    """The site folders of the interpreter running pytest, in the order its ``site`` adds them:
    user site (when enabled), then ``getsitepackages()`` (a venv's own, then its base's when it
    was made with --system-site-packages; conda and system installs alike)."""
    dirs = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    dirs += site.getsitepackages()
    return [d for i, d in enumerate(dirs) if d not in dirs[:i] and os.path.isdir(d)]


def _build_options():
    """pip options for building the wheel (see the module docstring): offline with this
    environment's setuptools when it can make a wheel, else pip's isolated build from the index."""
    try:
        setuptools = tuple(int(n) for n in re.findall(r"\d+", metadata.version("setuptools"))[:2])
    except metadata.PackageNotFoundError:
        setuptools = (0, 0)
    if setuptools >= (70, 1) or importlib.util.find_spec("wheel") is not None:
        return ["--no-build-isolation", "--no-index"]
    return []


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """The project installed non-editably into a fresh venv; its source copy already deleted."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    for rel in _checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    root = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / BIN / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    # torch, pip, setuptools, ... of the environment running pytest, after the venv's own folder
    Path(purelib, "_detkit_test_main_env.pth").write_text("".join(f"{d}\n" for d in _site_dirs()))
    options = _build_options()
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", *options,
                          "--disable-pip-version-check", "-q", str(src)],
                         capture_output=True, text=True, timeout=300)
    hint = ("" if options else "\n(built in an isolated environment with setuptools and wheel from the "
            "package index, as this environment's setuptools < 70.1 without 'wheel' cannot build a "
            "wheel; offline, 'pip install wheel' or 'pip install -U setuptools' here avoids the download)")
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:] + hint
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
