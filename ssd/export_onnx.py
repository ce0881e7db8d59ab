"""Export an SSD300-ResNet34 checkpoint to ONNX (MLPerf's inference benchmark runs SSD-ResNet34
as ONNX): ``python ssd/export_onnx.py --checkpoint ssd_output/models/iter_N.pt --output-name ssd.onnx``.

By default the graph returns the network's two maps as the reference's model does: ``locs``
[N, 4, 8732] (box offsets) and ``confs`` [N, labels, 8732] (class logits, background first).
``--decode`` adds the box decoding (no NMS, which stays with the caller): ``boxes`` [N, 8732, 4]
ltrb in [0, 1] image coordinates and ``scores`` [N, 8732, labels] softmax probabilities, what
``Encoder.decode_batch`` feeds its per-class NMS. The batch dimension is dynamic. The file's
metadata names the model, the output kind and the checkpoint's label names (``label_map``), for
``tools/demo.py --onnx`` (``detcore/onnx_runtime.py``).
"""
import sys
import warnings
from pathlib import Path

# Run as a script, Python puts ssd/ first on sys.path, where data.py / model.py would shadow any
# top-level module of the same name; replace it with the repository root (as ssd/train.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402

import torch  # noqa: E402
from loguru import logger  # noqa: E402
from torch import nn  # noqa: E402

from accel.errors import UserError, cli_entry  # noqa: E402
from detcore.onnx_runtime import write_metadata  # noqa: E402
from ssd import Encoder, dboxes300_coco  # noqa: E402
from ssd.data import INPUT_SIZE  # noqa: E402
from ssd.demo import load_detector  # noqa: E402


class DecodedSSD(nn.Module):
    """SSD300 followed by the encoder's ``scale_back_batch``: (boxes ltrb, class probabilities)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.encoder = net, Encoder(dboxes300_coco())

    def forward(self, images):
        return self.encoder.scale_back_batch(*self.net(images))


def make_parser():
    p = argparse.ArgumentParser(description="Export an SSD300-ResNet34 checkpoint to ONNX.")
    p.add_argument("--checkpoint", required=True, help="ssd300_latest.pth or models/iter_N.pt")
    p.add_argument("--output-name", "--output_name", dest="output_name", default="ssd300_resnet34.onnx")
    p.add_argument("--input", default="image", help="name of the ONNX input")
    p.add_argument("-o", "--opset", type=int, default=11)
    p.add_argument("--batch-size", type=int, default=1, help="batch of the traced example (dynamic anyway)")
    p.add_argument("--decode", action="store_true",
                   help="outputs boxes (ltrb, [0, 1]) and scores (softmax) instead of locs and confs")
    return p


def export(model, path, batch_size=1, opset=11, input_name="image", output_names=("locs", "confs")):
    """Trace ``model`` on a zero batch and write ``path`` with a dynamic batch dimension."""
    dummy = torch.zeros(batch_size, 3, INPUT_SIZE, INPUT_SIZE)
    axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=[input_name], output_names=list(output_names),
                          opset_version=opset, dynamic_axes=axes, dynamo=False)


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
    net, names = load_detector(args.checkpoint, torch.device("cpu"))
    net = net.to(memory_format=torch.contiguous_format)
    model = DecodedSSD(net).eval() if args.decode else net
    outputs = ("boxes", "scores") if args.decode else ("locs", "confs")
    Path(args.output_name).parent.mkdir(parents=True, exist_ok=True)
    export(model, args.output_name, args.batch_size, args.opset, args.input, outputs)
    write_metadata(args.output_name, "ssd", "decoded" if args.decode else "raw", names)
    logger.info(f"wrote {args.output_name} (input {args.input}: Nx3x{INPUT_SIZE}x{INPUT_SIZE}, outputs "
                f"{', '.join(outputs)}; {len(names)} labels: {', '.join(names)})")


if __name__ == "__main__":
    main()
