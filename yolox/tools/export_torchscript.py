"""Export a YOLOX model to TorchScript with upstream HEAD's flags:
``python -m yolox.tools.export_torchscript -n yolox-s -c yolox_s.pth --output-name yolox_s.torchscript.pt``.

The traced module returns the raw per-anchor map, or decoded boxes with ``--decode_in_inference``
(as tools/export_onnx.py). Load it with ``torch.jit.load`` anywhere torch runs, no detkit needed.
"""
import warnings
from pathlib import Path

import torch
from loguru import logger

from accel.errors import cli_entry
from yolox.core.cli import export_model
from yolox.core.options import ArgParser, add_export_args


def make_parser():
    return add_export_args(ArgParser("export_torchscript.py", description="YOLOX TorchScript export"),
                           "yolox.torchscript.pt")


def save_torchscript(model, path, input_size, batch_size=1):
    """Trace an eval-mode ``model`` on a zero batch and save it to ``path`` (folder made, one log
    line): the CLI's whole export; yolox.api's ``export_torchscript`` calls it too."""
    dummy = torch.zeros(batch_size, 3, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)   # grid sizes fixed by test_size
        warnings.simplefilter("ignore", FutureWarning)   # newer torch steers to torch.export; the
        # format stays what upstream's export_torchscript.py writes and torch.jit.load reads
        traced = torch.jit.trace(model, dummy)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    kind = "decoded boxes" if model.head.decode_in_inference else "raw map"
    logger.info(f"wrote {path} (input {batch_size}x3x{input_size[0]}x{input_size[1]}, output {kind})")
    return Path(path)


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    exp, model = export_model(args)
    save_torchscript(model, args.output_name, exp.test_size, args.batch_size)


if __name__ == "__main__":
    main()
