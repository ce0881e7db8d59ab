"""Run an SSD300-ResNet34 checkpoint on an image or a folder of images and draw the detections:
python ssd/demo.py --checkpoint ssd_output/ssd300_latest.pth --path IMG_OR_DIR --conf 0.3 --save_result

Takes either SSD checkpoint (``ssd300_latest.pth`` or a ``models/iter_N.pt``, ours or the MLPerf
reference's); the label count comes from the weights, the class names from its ``label_map``
(numbers where it has none). Images go through the evaluation's preprocessing (resize to 300,
ImageNet normalisation) and its decoding + per-class NMS (``Encoder.decode_batch``).
With --save_result the drawn images go to --output-dir (default
ssd_output/vis_res/<timestamp>/), which is printed; without it each box is printed on a line.
"""
import sys
import time
from pathlib import Path

# Run as a script, Python puts ssd/ first on sys.path, where data.py / model.py would shadow any
# top-level module of the same name; replace it with the repository root (as ssd/train.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from accel import add_device_args, mark_step, resolve_device  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402
from accel.policy import postprocess_device  # noqa: E402
from detcore.draw import draw, image_files  # noqa: E402
from detcore.weights import strip_prefixes  # noqa: E402
from ssd import SSD300, Encoder, dboxes300_coco  # noqa: E402
from ssd.data import to_normalised_tensor  # noqa: E402
from ssd.engine import (label_count, label_names, load_strict, place_model, read_checkpoint,  # noqa: E402
                        to_model_input)

DEFAULT_OUTPUT = Path("ssd_output") / "vis_res"
NOT_SSD = "expected an SSD300-ResNet34 checkpoint (ssd/train.py's or the MLPerf reference's)"


def make_parser():
    p = argparse.ArgumentParser(description="Draw SSD300-ResNet34 detections on images.")
    p.add_argument("--checkpoint", "-c", required=True,
                   help="ssd300_latest.pth or models/iter_N.pt (ours or the MLPerf reference's)")
    p.add_argument("--path", required=True, help="an image or a folder of images")
    p.add_argument("--conf", type=float, default=0.3, help="score threshold (before NMS)")
    p.add_argument("--nms", type=float, default=0.5, help="IoU threshold of the per-class NMS (eval's 0.5)")
    p.add_argument("--save_result", "--save-result", dest="save_result", action="store_true",
                   help="write the drawn images (else print the boxes)")
    p.add_argument("--output-dir", default=None,
                   help=f"where drawn images go (implies --save_result; default {DEFAULT_OUTPUT}/<timestamp>)")
    add_device_args(p)
    return p


def check_args(args):
    if not 0 <= args.conf < 1:
        raise UserError(f"--conf must be in [0, 1) (got {args.conf})")
    if not 0 < args.nms <= 1:
        raise UserError(f"--nms must be in (0, 1] (got {args.nms})")


def load_detector(path, device):
    """(SSD300 in eval mode on ``device``, class names by label) from a checkpoint file; a file
    that is not an SSD300's is one line naming it. The label count is read off the weights (the
    first class-confidence conv), so a model fine-tuned on any label count loads."""
    state = read_checkpoint(path)
    labels = label_count(strip_prefixes(state["model"]))
    if labels is None or labels < 2:
        raise UserError(f"--checkpoint {path}: not an SSD300 checkpoint (no class-confidence conv "
                        f"'conf.0.weight' in its model); {NOT_SSD}")
    net = SSD300(label_num=labels)
    load_strict(net, state, path, NOT_SSD)
    known = label_names(state)
    names = [known.get(i, str(i)) for i in range(labels)]
    return place_model(net, device).eval(), names


class Predictor:
    """Resize 300 + normalise -> SSD300 -> decode + NMS -> boxes in original image pixels."""

    def __init__(self, net, device, conf, nms):
        self.net, self.device, self.conf, self.nms = net, device, conf, nms
        self.encoder = Encoder(dboxes300_coco())

    @torch.no_grad()
    def __call__(self, img):
        """``img``: a PIL RGB image. Rows (x1, y1, x2, y2, score, label) as a float numpy array."""
        ploc, plabel = self.net(to_model_input(to_normalised_tensor(img)[None], self.device))
        mark_step(self.device)                # HPU lazy mode: run the graph before decoding, as eval
        host = postprocess_device(self.device)
        boxes, labels, scores = self.encoder.decode_batch(
            ploc.to(host), plabel.to(host), criteria=self.nms, max_output=200,
            nms_valid_thresh=self.conf)[0]
        w, h = img.size
        # clipped to the image: an undertrained model may decode boxes far outside it (beyond
        # what cv2's int32 coordinates hold); nan rows and boxes with no area inside are dropped
        pixels = boxes.float().cpu() * torch.tensor([w, h, w, h], dtype=torch.float32)
        pixels = torch.minimum(pixels.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))
        rows = torch.cat([pixels, scores.float().cpu()[:, None], labels.float().cpu()[:, None]], dim=1)
        keep = torch.isfinite(rows).all(dim=1) & (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
        return rows[keep].numpy()


def read_rgb(path):
    """The image as PIL RGB, or None (with a message) when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        print(f"skipped {path}: not a readable image ({exc})", file=sys.stderr)
        return None


def make_dir(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {folder}: cannot create it ({exc.strerror})") from None


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    check_args(args)
    files = image_files(args.path)
    device = resolve_device(args)
    net, names = load_detector(args.checkpoint, device)
    predictor = Predictor(net, device, args.conf, args.nms)
    save = args.save_result or args.output_dir is not None
    out_dir = Path(args.output_dir) if args.output_dir else DEFAULT_OUTPUT / time.strftime("%Y_%m_%d_%H_%M_%S")
    done = 0
    for path in files:
        img = read_rgb(path)
        if img is None:
            continue
        t0 = time.time()
        dets = predictor(img)
        done += 1
        print(f"{path}: {len(dets)} detections in {1000 * (time.time() - t0):.1f} ms")
        if save:
            make_dir(out_dir)
            bgr = np.ascontiguousarray(np.asarray(img)[:, :, ::-1])
            target = out_dir / path.name
            if not cv2.imwrite(str(target), draw(bgr, dets, names)):
                raise UserError(f"--output-dir {out_dir}: could not write {target}")
        else:
            for x1, y1, x2, y2, score, cls in dets.tolist():
                print(f"  {names[int(cls)]} {score:.3f} [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    if not done:
        raise UserError(f"--path {args.path}: none of its {len(files)} image(s) could be read")
    if save:
        print(f"saved drawn images under {out_dir}")


if __name__ == "__main__":
    main()
