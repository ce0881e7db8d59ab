"""detkit: YOLOX and SSD-ResNet34 training on HPU, CUDA and CPU."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


setup(
    name="detkit",
    version="0.1.0",
    description="YOLOX and SSD-ResNet34 detectors for Gaudi (HPU), CUDA and CPU",
    python_requires=">=3.9",
    packages=find_packages(include=["accel", "accel.*", "detcore", "detcore.*", "yolox", "yolox.*",
                                    "ssd", "ssd.*"]),
    install_requires=_requirements(),
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "onnx", "onnxruntime", "tensorboard"],
                    "onnx": ["onnx", "onnxruntime"], "tensorboard": ["tensorboard"],
                    "wandb": ["wandb"]},
)
