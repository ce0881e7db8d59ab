"""Export a YOLOX model to TorchScript with upstream HEAD's flags:
``python tools/export_torchscript.py -n yolox-s -c yolox_s.pth --output-name yolox_s.torchscript.pt``.

The traced module returns the raw per-anchor map, or decoded boxes with ``--decode_in_inference``
(as tools/export_onnx.py). Load it with ``torch.jit.load`` anywhere torch runs, no detkit needed.
"""
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from loguru import logger  # noqa: E402

from accel.errors import cli_entry  # noqa: E402
from yolox.core.cli import ArgParser, add_export_args, export_model  # noqa: E402


def make_parser():
    return add_export_args(ArgParser("export_torchscript.py", description="YOLOX TorchScript export"),
                           "yolox.torchscript.pt")


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    exp, model = export_model(args)
    dummy = torch.zeros(args.batch_size, 3, *exp.test_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)   # grid sizes fixed by test_size
        warnings.simplefilter("ignore", FutureWarning)   # newer torch steers to torch.export; the
        # format stays what upstream's export_torchscript.py writes and torch.jit.load reads
        traced = torch.jit.trace(model, dummy)
    Path(args.output_name).parent.mkdir(parents=True, exist_ok=True)
    traced.save(args.output_name)
    kind = "decoded boxes" if args.decode_in_inference else "raw map"
    logger.info(f"wrote {args.output_name} (input {args.batch_size}x3x{exp.test_size[0]}x{exp.test_size[1]}, "
                f"output {kind})")


if __name__ == "__main__":
    main()
