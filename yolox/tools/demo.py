"""Run a YOLOX checkpoint, or an exported YOLOX / SSD300 .onnx, on images, a video or a webcam and
draw the detections (upstream YOLOX's demo types and flags):

python -m yolox.tools.demo image -n yolox-s -c CKPT --path IMG_OR_DIR --conf 0.25 --nms 0.45 --tsize 640 --save_result
python -m yolox.tools.demo video -n yolox-s -c CKPT --path clip.mp4 --save_result
python -m yolox.tools.demo webcam -n yolox-s -c CKPT --camid 0 --save_result
python -m yolox.tools.demo image --onnx yolox_s.onnx --path IMG_OR_DIR --save_result      # no torch needed
python -m yolox.tools.demo video --onnx ssd.onnx --path clip.mp4 --save_result            # SSD300 exports too
python -m yolox.tools.demo image --onnx m.xml --path 'val/*.jpg' --batch-size 8 --save-txt --save-json --ann val.json
python -m yolox.tools.demo video --onnx m.onnx --runtime openvino --path rtsp://host/stream --save_result

--path takes an image, a folder, a glob, a video file or a stream URL OpenCV opens (``webcam
--camid N`` a camera); ``--batch-size`` frames go through the network together; ``--save-txt``
writes YOLO labels, ``--save-json`` a COCO results json (ids from ``--ann`` when given),
``--classes`` keeps some classes, ``--agnostic-nms`` runs one NMS across classes
(``detcore/deploy/media.py``). A stream that stops (ends, or drops mid-way) ends the run with one line,
and what was saved stays.

With --save_result the drawn images, or the annotated video (mp4v at the source's frame rate and
size; ``camera.mp4`` for a webcam), go to <output_dir>/<experiment>/vis_res/<timestamp>/ and the
folder is printed; without it the detections are printed one line per box. A webcam runs until
Ctrl-C. With --onnx the model, its input size and its class names come from the .onnx
(``detcore/deploy/runtime.py``: numpy + onnxruntime + OpenCV; nothing here imports torch then), and
the output folder is --output_dir/<-expn or the file's stem>/vis_res/<timestamp>/.

Also ``python tools/demo.py ...`` in a checkout and the ``detkit-demo`` console script. Nothing
imports torch at module level: the PyTorch path imports it once it is chosen.
"""
import sys
import time
from pathlib import Path

from accel.errors import ArgParser, UserError, cli_entry
from detcore.deploy.media import add_output_args, check_batch_size, open_source as open_media, run_source
from detcore.deploy.track import add_tracker_args, demo_writer

DEMO_TYPES = ("image", "video", "webcam")
DEFAULT_OUTPUT_DIR = "./YOLOX_outputs"      # the exps' output_dir, for --onnx runs that have no exp
ONNX_SCOPE = ("with --onnx the model, its input size and its classes come from the .onnx: -c, -f, -n, --tsize, "
              "--fuse, --device, precision flags and exp overrides do not apply")



def add_demo_args(parser, onnx=False):
    """The flags both paths share: what to read (upstream's demo types) and what to do with it."""
    parser.add_argument("demo", choices=DEMO_TYPES,
                        help="image: --path is an image or a folder; video: --path is a video file; "
                             "webcam: --camid")
    parser.add_argument("--path", default=None,
                        help="image: an image, a folder or a glob; video: a video file or a stream URL")
    parser.add_argument("--camid", type=int, default=0, help="webcam camera id")
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="run an exported YOLOX or SSD300 .onnx with onnxruntime instead of a "
                             "checkpoint (no torch; the kind is read off the model). " + ONNX_SCOPE)
    parser.add_argument("--conf", type=float, default=None if onnx else 0.3,
                        help="score threshold" + (" (default: 0.3)" if onnx else ""))
    parser.add_argument("--nms", type=float, default=None if onnx else 0.3,
                        help="NMS IoU threshold" + (" (default: YOLOX 0.3, SSD 0.5 as ssd/demo.py)" if onnx else ""))
    parser.add_argument("--save_result", "--save-result", dest="save_result", action="store_true",
                        help="write the drawn images / the annotated video (else print the boxes)")
    parser.add_argument("--legacy", action="store_true", help="YOLOX's old RGB-normalised input")
    add_output_args(parser)
    add_tracker_args(parser, track_flag=True)
    return parser


def make_parser():
    """The PyTorch path's flags (a YOLOX checkpoint through its exp)."""
    from accel import add_device_args, add_precision_args
    from yolox.core.options import ArgParser, add_exp_args

    parser = ArgParser("demo.py", description="YOLOX demo: images, a video or a webcam")
    add_demo_args(parser)
    add_exp_args(parser)
    parser.add_argument("-c", "--ckpt", required=True, help="checkpoint to run")
    parser.add_argument("--tsize", type=int, default=None)
    parser.add_argument("--fuse", action="store_true")
    add_device_args(parser)
    add_precision_args(parser)
    parser.add_argument("opts", nargs="*", help="exp overrides: key value ...")
    return parser


def make_onnx_parser():
    """The --onnx path's flags; argparse only, so parsing them imports no torch."""
    parser = ArgParser("demo.py --onnx", description="Run an exported YOLOX or SSD300 .onnx with onnxruntime")
    add_demo_args(parser, onnx=True)
    parser.add_argument("-expn", "--experiment-name", dest="experiment_name", default=None,
                        help="output subfolder (default: the .onnx file's stem)")
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--class_names", "--class-names", dest="class_names", default=None,
                        help="comma-separated class names (default: those the exporter stored, COCO's "
                             "for 80 classes, else numbers)")
    parser.add_argument("--runtime", choices=("auto", "onnxruntime", "openvino"), default="auto",
                        help="what runs the model (auto: OpenVINO for an IR .xml, else onnxruntime)")
    parser.add_argument("--threads", type=int, default=None, help="the runtime's intra-op threads")
    return parser


def class_names(exp):
    """The exp's ``class_names``, else COCO's names for 80 classes, else class indices."""
    names = getattr(exp, "class_names", None)
    if names:
        return list(names)
    if exp.num_classes == 80:
        try:
            from yolox.data import COCO_CLASSES
            return list(COCO_CLASSES)
        except ImportError:
            pass
    return [str(i) for i in range(exp.num_classes)]


class Predictor:
    """Letterbox -> model -> postprocess -> boxes in original image pixels. ``classes``: keep
    anchors whose best class is one of these (before NMS, as Ultralytics' --classes);
    ``agnostic``: one NMS across classes."""

    def __init__(self, model, exp, device, precision, legacy=False, classes=None, agnostic=False):
        from yolox.data import ValTransform

        self.model, self.exp, self.device, self.precision = model, exp, device, precision
        self.preproc = ValTransform(legacy=legacy)
        self.classes, self.agnostic = classes, agnostic
        if classes is not None:
            bad = sorted(c for c in set(classes) if not 0 <= c < exp.num_classes)
            if bad:
                raise UserError(f"--classes {' '.join(map(str, bad))}: the model has class indices "
                                f"0..{exp.num_classes - 1}")

    def __call__(self, img):
        """``img``: BGR uint8. Rows (x1, y1, x2, y2, score, class) as a float32 numpy array."""
        return self.predict_batch([img])[0]

    def predict_batch(self, imgs):
        """Rows per BGR image of ``imgs``, the network run once on the whole batch."""
        import torch

        from yolox.utils import postprocess

        size = self.exp.test_size
        x = torch.stack([torch.from_numpy(self.preproc(img, None, size)[0]) for img in imgs]).to(self.device)
        with torch.no_grad(), self.precision.autocast():
            out = self.model(x)
        if self.classes is not None:          # an anchor whose best class is not wanted scores 0
            best = out[..., 5:5 + self.exp.num_classes].argmax(dim=-1)
            wanted = torch.isin(best, torch.tensor(self.classes, device=best.device))
            out = torch.cat([out[..., :4], out[..., 4:5] * wanted.unsqueeze(-1).to(out.dtype), out[..., 5:]], dim=-1)
        dets = postprocess(out, self.exp.num_classes, self.exp.test_conf, self.exp.nmsthre,
                           class_agnostic=self.agnostic)
        result = []
        for img, det in zip(imgs, dets):
            h, w = img.shape[:2]
            det = det.float().cpu()
            scale = min(size[0] / h, size[1] / w)
            rows = torch.cat([det[:, :4] / scale, (det[:, 4] * det[:, 5])[:, None], det[:, 6:7]], dim=1)
            # draw only what can be drawn: an undertrained model may decode huge or nan boxes
            result.append(rows[torch.isfinite(rows).all(dim=1)].numpy())
        return result


def open_source(args):
    """What the demo reads, opened before any model loads (a wrong path fails in a second)."""
    check_batch_size(args.batch_size)
    if args.ann and not args.save_json:
        raise UserError("--ann gives --save-json its ids; pass --save-json too")
    if args.demo != "webcam" and args.path is None:
        wanted = 'an image, a folder or a glob' if args.demo == 'image' else 'a video file or a stream URL'
        raise UserError(f"{args.demo} needs --path ({wanted})")
    return open_media(args.path, args.camid, kind=args.demo)


def run(args, source, predict_batch, names, out_dir, label_offset=0, read=None):
    """``detcore.deploy.media.run_source`` with the ``ResultWriter`` the flags ask for; with
    ``--track`` the detections go through ByteTrack and a ``TrackWriter`` draws and writes tracks."""
    writer, predict_batch = demo_writer(args, source, predict_batch, out_dir, names, save_img=args.save_result,
                                        save_txt=args.save_txt, save_conf=args.save_conf, save_json=args.save_json,
                                        ann_file=args.ann, label_offset=label_offset)
    run_source(source, writer, args.batch_size, predict_batch, names, read)


def timestamp():
    return time.strftime("%Y_%m_%d_%H_%M_%S")


def onnx_main(argv):
    """--onnx: detcore.deploy.runtime on numpy + onnxruntime + OpenCV; nothing imports torch."""
    from detcore.deploy.runtime import Detector

    parser = make_onnx_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise UserError(f"demo.py --onnx: unrecognized arguments: {' '.join(extra)} ({ONNX_SCOPE})")
    source = open_source(args)
    detector = Detector(args.onnx, conf=args.conf, nms=args.nms, class_names=args.class_names,
                        legacy=args.legacy, runtime=args.runtime, threads=args.threads,
                        classes=args.classes, agnostic=args.agnostic_nms or None)
    print(detector.describe())
    out_dir = Path(args.output_dir) / (args.experiment_name or Path(args.onnx).stem) / "vis_res" / timestamp()
    run(args, source, detector.detect_batch, detector.names, out_dir,
        label_offset=1 if detector.kind == "ssd" else 0)


def torch_main(argv):
    from accel import Precision, resolve_device
    from yolox.core.cli import build_exp, load_model

    args = make_parser().parse_intermixed_args(argv)
    exp = build_exp(args, need_data=False)
    if args.data_dir:       # the data's class names (and count, when the exp has the default)
        from detcore.data.layout import class_names_of
        exp.sync_classes(names=class_names_of(args.data_dir, flag="--data_dir"))
    exp.test_conf, exp.nmsthre = args.conf, args.nms
    if args.tsize is not None:
        exp.test_size = (args.tsize, args.tsize)
    source = open_source(args)
    device = resolve_device(args)
    precision = Precision.from_args(args, device)
    predictor = Predictor(load_model(exp, args, device), exp, device, precision, args.legacy,
                          classes=args.classes, agnostic=args.agnostic_nms)
    out_dir = Path(exp.output_dir) / args.experiment_name / "vis_res" / timestamp()
    run(args, source, predictor.predict_batch, class_names(exp), out_dir)


@cli_entry
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--onnx" or a.startswith("--onnx=") for a in argv):
        return onnx_main(argv)
    return torch_main(argv)


if __name__ == "__main__":
    main()
