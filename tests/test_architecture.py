"""The architecture rules of DESIGN.md, checked on the source tree so they cannot drift."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES_ABOVE_ACCEL = ("yolox", "ssd", "detcore", "tools", "exps")
# What a device check looks like; decisions that depend on the device live in accel/policy.py.
DEVICE_CHECK = re.compile(r"is_hpu|\.type\s*(==|!=|in\b)|cuda\.is_available|habana")


def sources(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            yield node.args[0].value


def test_no_device_checks_outside_accel():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in sources(*PACKAGES_ABOVE_ACCEL)
            for n, line in enumerate(p.read_text().splitlines(), 1) if DEVICE_CHECK.search(line)]
    assert hits == []


def test_the_grep_would_catch_a_device_branch():
    for line in ('if device.type == "hpu":', "pin = torch.cuda.is_available()",
                 "import habana_frameworks.torch.core", "if accel.is_hpu(device):"):
        assert DEVICE_CHECK.search(line), line


def test_only_accel_hpu_imports_habana():
    importers = {p.relative_to(ROOT).as_posix() for p in sources("accel", "detcore", "yolox", "ssd", "tools", "bench")
                 if any(m.split(".")[0] in ("habana_frameworks", "habana_dataloader")
                        for m in imported_modules(p))}
    hpu_source = (ROOT / "accel" / "hpu.py").read_text()
    assert importers == set()            # accel/hpu.py imports by name through _module()
    assert '"habana_frameworks.torch.core"' in hpu_source and "import_module(name)" in hpu_source
    others = [p.name for p in sources("accel") if p.name != "hpu.py"
              and re.search(r"^\s*(import|from)\s+habana", p.read_text(), re.M)]
    assert others == []


def test_device_and_precision_do_not_import_each_other():
    assert "accel.precision" not in set(imported_modules(ROOT / "accel" / "device.py"))
    assert "accel.device" not in set(imported_modules(ROOT / "accel" / "precision.py"))


def test_accel_imports_nothing_above_it():
    for path in sources("accel"):
        above = [m for m in imported_modules(path) if m.split(".")[0] in ("yolox", "ssd", "detcore")]
        assert above == [], path.name


def test_one_home_for_coco_reading_and_scoring():
    """Both detectors read COCO through detcore.data.coco and score through detcore.evaluation.coco_eval."""
    for path in sources("yolox", "ssd"):
        mods = set(imported_modules(path))
        assert "pycocotools.coco" not in mods or path.name == "coco_classes.py", path
        assert "pycocotools.cocoeval" not in mods and "faster_coco_eval" not in mods, path
    users = {p.relative_to(ROOT).as_posix() for p in sources("yolox", "ssd")
             if {"detcore.data.coco", "detcore.evaluation.coco_eval"} & set(imported_modules(p))}
    assert {"yolox/data/datasets/coco.py", "ssd/data.py", "yolox/evaluators/coco_evaluator.py",
            "ssd/evaluation.py"} <= users


DETCORE_FLOORS = ("data", "evaluation", "training", "deploy")


def test_detcore_is_split_by_concern():
    """Every detcore module lives in one of the four concern packages, except the small shared
    homes (box conversions, file writing) and the old-path aliases."""
    top = sorted(p.name for p in (ROOT / "detcore").glob("*.py"))
    assert set(top) <= {"__init__.py", "boxes.py", "files.py", "moved.py", *OLD_PATHS_FILES}, top
    for floor in DETCORE_FLOORS:
        assert (ROOT / "detcore" / floor / "__init__.py").read_text().startswith('"""')


def test_deploy_imports_no_torch():
    """The exported-model runtime must run where torch is not installed."""
    users = [p.relative_to(ROOT).as_posix() for p in sources("detcore/deploy")
             if any(m.split(".")[0] in ("torch", "torchvision", "yolox", "ssd") for m in imported_modules(p))]
    assert users == []


OLD_PATHS = {"detcore.check_data": "detcore.data.check", "detcore.convert": "detcore.data.convert",
             "detcore.make_shapes": "detcore.data.shapes", "detcore.quantize_cli": "detcore.deploy.quantize_cli",
             "detcore.onnx_runtime": "detcore.deploy.runtime"}
OLD_PATHS_FILES = {old.split(".")[1] + ".py" for old in OLD_PATHS}


def test_old_import_paths_are_the_new_modules_and_warn(tmp_path):
    """0.1's documented paths keep working for a release: the same module object, one FutureWarning."""
    import subprocess
    import sys
    code = ("import warnings, importlib\n"
            f"pairs = {OLD_PATHS!r}\n"
            "for old, new in pairs.items():\n"
            "    with warnings.catch_warnings(record=True) as w:\n"
            "        warnings.simplefilter('always')\n"
            "        assert importlib.import_module(old) is importlib.import_module(new), old\n"
            "    assert [str(x.message).split()[0] for x in w if x.category is FutureWarning] == [old], old\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "ok", out.stderr
    run = subprocess.run([sys.executable, "-m", "detcore.make_shapes", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and "usage:" in run.stdout


# Which detcore floor may import which: data at the bottom (every format into the index), deploy
# on it (the torch-free runtime lists and reads images through data), evaluation on both (error
# images are drawn with deploy's drawing), training on top; accel and the small shared homes
# (detcore.files, detcore.boxes) under all of them.
FLOOR_IMPORTS = {"data": set(), "deploy": {"data"}, "evaluation": {"data", "deploy"},
                 "training": {"data", "deploy", "evaluation"}}


def test_detcore_floors_import_only_downwards():
    for floor, allowed in FLOOR_IMPORTS.items():
        for path in sources(f"detcore/{floor}"):
            above = {m.split(".")[1] for m in imported_modules(path)
                     if m.startswith("detcore.") and m.split(".")[1] in FLOOR_IMPORTS}
            assert above <= allowed | {floor}, (path.relative_to(ROOT).as_posix(), above - allowed)
