"""Shared test fixtures: the synthetic COCO set from tools/make_shapes.py (the project's only data)."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:       # plain `pytest` without `pip install -e .` still imports the project
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    """Register the suite's markers, so ``-m cuda`` selects a known marker and ``--strict-markers``
    accepts it (an unregistered one warns at every use)."""
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU; skipped elsewhere, run by `bash bench/gpu_check.sh`")


def load_make_shapes():
    """Import tools/make_shapes.py (tools/ is not a package) and return its ``make_shapes`` function."""
    module = sys.modules.get("make_shapes")
    if module is None:
        spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "tools" / "make_shapes.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_shapes"] = module
        spec.loader.exec_module(module)
    return module.make_shapes


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory):
    """A small generated COCO-format set (24 train / 12 val images, seed 0); treat it as read-only."""
    out = tmp_path_factory.mktemp("shapes_coco")
    return load_make_shapes()(out, num_train=24, num_val=12, seed=0)


@pytest.fixture
def log_lines():
    """Messages logged (INFO and up) while the test runs."""
    from loguru import logger

    lines = []
    sink = logger.add(lambda m: lines.append(str(m).strip()), format="{message}", level="INFO")
    yield lines
    logger.remove(sink)


@pytest.fixture(scope="session", autouse=True)
def imagenet_cache(tmp_path_factory):
    """TORCH_HOME with torchvision's ImageNet ResNet-34 file in its cache, as a recipe user has it
    (random weights here: nothing is downloaded). SSD runs without --pretrained-backbone load it
    through torchvision's real weights API; subprocesses inherit the variable."""
    import os

    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
    cache = home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cache.parent.mkdir(parents=True)
    torch.manual_seed(34)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), cache)
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield cache
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="session")
def drill_data(tmp_path_factory):
    """The fault drills' tiny COCO sets ({"yolox": 24 train / 4 val, seed 0; "ssd": 6 / 1,
    seed 1}), shared by tests/test_fault_tolerance.py, test_slurm.py and test_watchdog.py."""
    make = load_make_shapes()
    return {"yolox": make(tmp_path_factory.mktemp("drill_yolox"), num_train=24, num_val=4, seed=0),
            "ssd": make(tmp_path_factory.mktemp("drill_ssd"), num_train=6, num_val=1, seed=1)}


@pytest.fixture(scope="session")
def torchrun_reference(drill_data, tmp_path_factory):
    """``torchrun_reference(model)`` -> the folder of the undisturbed 2-process torchrun run of
    tools/fault_drill.py's tiny training (its log is ``reference.log`` there), run once per
    session: the target that two-machine, srun and requeued runs must equal bit for bit."""
    from yolox_tools import load_tool

    drill, done = load_tool("fault_drill"), {}

    def get(model):
        if model not in done:
            out = tmp_path_factory.mktemp(f"{model}_reference")
            code, _ = drill.run(drill.train_command(model, drill_data[model], out / "reference", 2),
                                out / "reference.log")
            assert code == 0, (out / "reference.log").read_text(errors="replace")[-3000:]
            done[model] = out
        return done[model]

    return get
