"""Run an SSD300-ResNet34 checkpoint on an image or a folder of images and draw the detections:
python ssd/demo.py --checkpoint ssd_output/ssd300_latest.pth --path IMG_OR_DIR --conf 0.3 --save_result

Takes either SSD checkpoint (``ssd300_latest.pth`` or a ``models/iter_N.pt``, ours or the MLPerf
reference's); the label count comes from the weights, the class names from its ``label_map``
(numbers where it has none). Images go through the evaluation's preprocessing (resize to 300,
ImageNet normalisation) and its decoding + per-class NMS (``Encoder.decode_batch``).
With --save_result the drawn images go to --output-dir (default
ssd_output/vis_res/<timestamp>/), which is printed; without it each box is printed on a line.

--path also takes a glob, a video file, a stream URL OpenCV opens or a camera index (an annotated
``<name>.mp4`` with --save_result); ``--batch-size`` images go through the network together;
``--save-txt`` writes YOLO labels (class = label - 1), ``--save-json`` a COCO results json (ids
from ``--ann``), ``--classes`` keeps some labels, ``--agnostic-nms`` runs one NMS across classes
(``detcore/deploy/media.py``, shared with tools/demo.py).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from accel import add_device_args, mark_step, resolve_device  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402
from accel.policy import postprocess_device  # noqa: E402
from detcore.deploy.media import add_output_args, check_batch_size, open_source, run_source  # noqa: E402
from detcore.deploy.track import add_tracker_args, demo_writer  # noqa: E402
from detcore.training.weights import strip_prefixes  # noqa: E402
from ssd import SSD300, Encoder, dboxes300_coco  # noqa: E402
from ssd.data import to_normalised_tensor  # noqa: E402
from ssd.checkpoint import label_count, label_names, load_strict, read_checkpoint  # noqa: E402
from ssd.step import place_model, to_model_input  # noqa: E402

DEFAULT_OUTPUT = Path("ssd_output") / "vis_res"
NOT_SSD = "expected an SSD300-ResNet34 checkpoint (ssd/train.py's or the MLPerf reference's)"


def make_parser():
    p = argparse.ArgumentParser(description="Draw SSD300-ResNet34 detections on images.")
    p.add_argument("--checkpoint", "-c", required=True,
                   help="ssd300_latest.pth or models/iter_N.pt (ours or the MLPerf reference's)")
    p.add_argument("--path", required=True,
                   help="an image, a folder, a glob, a video file, a stream URL or a camera index")
    p.add_argument("--conf", type=float, default=0.3, help="score threshold (before NMS)")
    p.add_argument("--nms", type=float, default=0.5, help="IoU threshold of the per-class NMS (eval's 0.5)")
    p.add_argument("--save_result", "--save-result", dest="save_result", action="store_true",
                   help="write the drawn images (else print the boxes)")
    p.add_argument("--output-dir", default=None,
                   help=f"where drawn images go (implies --save_result; default {DEFAULT_OUTPUT}/<timestamp>)")
    add_output_args(p, txt_class="class = label - 1,",
                    classes_help="keep only these labels (1 = the first class), before NMS")
    add_tracker_args(p, track_flag=True)
    add_device_args(p)
    return p


def check_args(args):
    if not 0 <= args.conf < 1:
        raise UserError(f"--conf must be in [0, 1) (got {args.conf})")
    if not 0 < args.nms <= 1:
        raise UserError(f"--nms must be in (0, 1] (got {args.nms})")
    check_batch_size(args.batch_size)
    if args.ann and not args.save_json:
        raise UserError("--ann gives --save-json its ids; pass --save-json too")


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
    """Resize 300 + normalise -> SSD300 -> decode + NMS -> boxes in original image pixels.

    ``classes``: the labels whose candidates are kept (before NMS); ``agnostic``: one NMS across
    classes. Either one selects in ``select`` below; neither, the evaluator's own
    ``Encoder.decode_batch`` (so the demo's boxes stay the evaluation's)."""

    def __init__(self, net, device, conf, nms, classes=None, agnostic=False):
        self.net, self.device, self.conf, self.nms = net, device, conf, nms
        self.encoder = Encoder(dboxes300_coco())
        self.classes, self.agnostic = classes, agnostic

    def __call__(self, img):
        """``img``: a PIL RGB image. Rows (x1, y1, x2, y2, score, label) as a float numpy array."""
        return self.predict_batch([img])[0]

    def select(self, ploc, plabel):
        """``Encoder.decode_batch``'s selection with ``classes`` and ``agnostic``: per wanted class
        the 200 best scores above conf, NMS per class (or across classes), the 200 best."""
        from torchvision.ops import batched_nms

        boxes, probs = self.encoder.scale_back_batch(ploc, plabel)
        cls_scores = probs[..., 1:].permute(0, 2, 1)                          # [N, C-1, A]
        if self.classes is not None:
            wanted = torch.isin(torch.arange(1, probs.shape[2]), torch.tensor(self.classes))
            cls_scores = cls_scores * wanted[None, :, None].to(cls_scores.dtype)
        top_scores, top_anchor = cls_scores.topk(min(200, cls_scores.shape[2]), dim=2)
        image_idx, cls_idx, slot = torch.nonzero(top_scores > self.conf, as_tuple=True)
        anchor, scores = top_anchor[image_idx, cls_idx, slot], top_scores[image_idx, cls_idx, slot]
        cand = boxes[image_idx, anchor]
        groups = image_idx if self.agnostic else image_idx * probs.shape[2] + cls_idx
        kept = batched_nms(cand, scores, groups, self.nms)
        out = []
        for i in range(len(boxes)):
            sel = kept[image_idx[kept] == i][:200]
            out.append((cand[sel], cls_idx[sel] + 1, scores[sel]))
        return out

    @torch.no_grad()
    def predict_batch(self, imgs):
        """Rows per PIL RGB image of ``imgs``, the network run once on the whole batch."""
        batch = torch.stack([to_normalised_tensor(img) for img in imgs])
        ploc, plabel = self.net(to_model_input(batch, self.device))
        mark_step(self.device)                # HPU lazy mode: run the graph before decoding, as eval
        host = postprocess_device(self.device)
        if self.classes is None and not self.agnostic:
            decoded = self.encoder.decode_batch(ploc.to(host), plabel.to(host), criteria=self.nms,
                                                max_output=200, nms_valid_thresh=self.conf)
        else:
            decoded = self.select(ploc.to(host).float(), plabel.to(host).float())
        result = []
        for img, (boxes, labels, scores) in zip(imgs, decoded):
            w, h = img.size
            # clipped to the image: an undertrained model may decode boxes far outside it (beyond
            # what cv2's int32 coordinates hold); nan rows and boxes with no area inside are dropped
            size = torch.tensor([w, h, w, h], dtype=torch.float32)
            pixels = torch.minimum((boxes.float().cpu() * size).clamp(min=0), size)
            rows = torch.cat([pixels, scores.float().cpu()[:, None], labels.float().cpu()[:, None]], dim=1)
            keep = torch.isfinite(rows).all(dim=1) & (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
            result.append(rows[keep].numpy())
        return result


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


def _pil(item):
    """A frame as PIL RGB: image files come decoded by Pillow already (as the evaluation reads
    them), stream frames are OpenCV's BGR arrays."""
    return item if isinstance(item, Image.Image) else Image.fromarray(np.ascontiguousarray(item[:, :, ::-1]))


def _bgr(item):
    """A frame as the BGR array the results are drawn on (``_pil``'s inverse)."""
    return np.ascontiguousarray(np.asarray(item)[:, :, ::-1]) if isinstance(item, Image.Image) else item


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    check_args(args)
    source = open_source(args.path)
    device = resolve_device(args)
    net, names = load_detector(args.checkpoint, device)
    if args.classes is not None:
        bad = sorted(c for c in set(args.classes) if not 0 < c < len(names))
        if bad:
            raise UserError(f"--classes {' '.join(map(str, bad))}: the checkpoint has labels 1..{len(names) - 1} "
                            "(0 is the background)")
    predictor = Predictor(net, device, args.conf, args.nms, classes=args.classes, agnostic=args.agnostic_nms)
    save = args.save_result or args.output_dir is not None
    out_dir = Path(args.output_dir) if args.output_dir else DEFAULT_OUTPUT / time.strftime("%Y_%m_%d_%H_%M_%S")
    if save or args.save_txt or args.save_json:
        make_dir(out_dir)
    writer, predict_batch = demo_writer(
        args, source, lambda images: predictor.predict_batch([_pil(i) for i in images]), out_dir, names,
        save_img=save, save_txt=args.save_txt, save_conf=args.save_conf, save_json=args.save_json, ann_file=args.ann,
        label_offset=1)
    run_source(source, writer, args.batch_size, predict_batch, names, read=read_rgb, as_bgr=_bgr)


if __name__ == "__main__":
    main()
