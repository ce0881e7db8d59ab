"""python tools/register_model.py --onnx FILE --name NAME [--run-id ID] [--mlflow-uri URI]

Registers an exported detector in MLflow's model registry: the code is
detcore.deploy.register_cli (also ``python -m detcore.deploy.register_cli`` and
``detkit-register-model``). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.deploy.register_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
