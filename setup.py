"""detkit: YOLOX and SSD-ResNet34 training on HPU, CUDA and CPU.

A non-editable ``pip install .`` must work away from the checkout, so two things that live outside
the packages in the repo are put inside them here, each still with one home in the repo:
- ``exps/default`` and ``exps/example`` install as ``yolox/exp/default`` and ``yolox/exp/example``
  (``yolox.exp.build.exps_dir`` finds either), so ``-n yolox-s`` works installed;
- the HPU op lists ``ops_*_yolox.txt`` at the repo top are copied into the installed ``accel``
  package (``accel.oplists`` looks there first), so ``--hmp`` finds them installed.
"""
import os
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
OP_LISTS = ("ops_bf16_yolox.txt", "ops_fp32_yolox.txt")


def _requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _exp_packages():
    """exps/default and every exps/example/<dir> as packages under yolox.exp (package_dir maps
    them), so the exp files install beside yolox/exp/build.py without a second copy in the repo."""
    examples = sorted(p.name for p in (HERE / "exps" / "example").iterdir()
                      if p.is_dir() and any(p.glob("*.py")))
    return ["yolox.exp.default", "yolox.exp.example"] + [f"yolox.exp.example.{n}" for n in examples]


class BuildPyWithOpLists(build_py):
    """build_py that also copies the repo-top op lists into the built accel package (package_data
    can only take files from inside a package folder). An editable build skips it: there the
    checkout's repo-top files are found directly."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in OP_LISTS:
            self.copy_file(str(HERE / name), os.path.join(self.build_lib, "accel", name))


CONSOLE_SCRIPTS = [
    "detkit-train = yolox.tools.train:main",
    "detkit-eval = yolox.tools.eval:main",
    "detkit-eval-track = yolox.tools.eval_track:main",
    "detkit-demo = yolox.tools.demo:main",
    "detkit-export-onnx = yolox.tools.export_onnx:main",
    "detkit-export-torchscript = yolox.tools.export_torchscript:main",
    "detkit-make-shapes = detcore.data.shapes:main",
    "detkit-convert-data = detcore.data.convert:main",
    "detkit-check-data = detcore.data.check:main",
    "detkit-ssd-train = ssd.train:main",
    "detkit-ssd-demo = ssd.demo:main",
    "detkit-ssd-export-onnx = ssd.export_onnx:main",
    "detkit-quantize = detcore.deploy.quantize_cli:main",
    "detkit-register-model = detcore.deploy.register_cli:main",
    "detkit-compare = detcore.evaluation.compare_cli:main",
]

setup(
    name="detkit",
    version="0.1.0",
    description="YOLOX and SSD-ResNet34 detectors for Gaudi (HPU), CUDA and CPU",
    python_requires=">=3.9",
    packages=find_packages(include=["accel", "accel.*", "detcore", "detcore.*", "yolox", "yolox.*",
                                    "ssd", "ssd.*"]) + _exp_packages(),
    package_dir={"yolox.exp.default": "exps/default", "yolox.exp.example": "exps/example"},
    cmdclass={"build_py": BuildPyWithOpLists},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    install_requires=_requirements(),
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "ruff>=0.5", "onnx", "onnxruntime", "tensorboard",
                             "openvino", "nncf", "scipy", "lap", "trackeval", "motmetrics",
                             "mlflow>=3"],
                    "onnx": ["onnx", "onnxruntime"], "tensorboard": ["tensorboard"],
                    "openvino": ["openvino", "nncf", "onnx"],
                    "mutation": ["cosmic-ray>=8.7"],
                    "wandb": ["wandb"], "track": ["scipy", "trackeval"],
                    "mlflow": ["mlflow>=3", "onnx", "onnxruntime"]},
)
