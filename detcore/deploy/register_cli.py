"""python tools/register_model.py --onnx FILE --name NAME [--run-id ID] [--mlflow-uri URI]

Registers an exported detector (best an end-to-end ``--nms`` export of either exporter) in
MLflow's model registry as a pyfunc model served by the torch-free runtime
(``detcore.deploy.mlflow_model``): what ``--register NAME`` does at the end of training, for a
run that is already finished or a file exported by hand. Prints the version and the serve command.
"""
from pathlib import Path

from accel.errors import ArgParser, UserError, cli_entry


def make_parser():
    p = ArgParser("register_model.py", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--onnx", required=True, help="the exported model (.onnx)")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--run-id", "--run_id", dest="run_id", default=None,
                   help="the MLflow run the model belongs to (its training run); default: a new run")
    p.add_argument("--mlflow-uri", "--mlflow_uri", dest="mlflow_uri", default=None,
                   help="tracking server or store (default: MLFLOW_TRACKING_URI, else MLflow's local default)")
    return p


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    path = Path(args.onnx)
    if not path.is_file():
        raise UserError(f"--onnx {path}: no such file (export one with tools/export_onnx.py --nms)")
    from detcore.deploy.runtime import Detector
    Detector(path)            # an unreadable or foreign graph is one line here, not in the server
    try:
        from detcore.deploy.mlflow_model import register
    except ImportError:
        raise UserError("registering needs the mlflow package (pip install mlflow)") from None
    version = register(path, args.name, args.run_id, args.mlflow_uri)
    print(f"registered model '{args.name}' version {version}: "
          f"mlflow models serve -m models:/{args.name}/{version} --env-manager local")
    return version


if __name__ == "__main__":
    main()
