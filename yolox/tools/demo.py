"""Run a YOLOX checkpoint, or an exported YOLOX / SSD300 .onnx, on images, a video or a webcam and
draw the detections (upstream YOLOX's demo types and flags):

python -m yolox.tools.demo image -n yolox-s -c CKPT --path IMG_OR_DIR --conf 0.25 --nms 0.45 --tsize 640 --save_result
python -m yolox.tools.demo video -n yolox-s -c CKPT --path clip.mp4 --save_result
python -m yolox.tools.demo webcam -n yolox-s -c CKPT --camid 0 --save_result
python -m yolox.tools.demo image --onnx yolox_s.onnx --path IMG_OR_DIR --save_result      # no torch needed
python -m yolox.tools.demo video --onnx ssd.onnx --path clip.mp4 --save_result            # SSD300 exports too

With --save_result the drawn images, or the annotated video (mp4v at the source's frame rate and
size; ``camera.mp4`` for a webcam), go to <output_dir>/<experiment>/vis_res/<timestamp>/ and the
folder is printed; without it the detections are printed one line per box. A webcam runs until
Ctrl-C. With --onnx the model, its input size and its class names come from the .onnx
(``detcore/onnx_runtime.py``: numpy + onnxruntime + OpenCV; nothing here imports torch then), and
the output folder is --output_dir/<-expn or the file's stem>/vis_res/<timestamp>/.

Also ``python tools/demo.py ...`` in a checkout and the ``detkit-demo`` console script. Nothing
imports torch at module level: the PyTorch path imports it once it is chosen.
"""
import argparse
import sys
import time
from pathlib import Path

import cv2

from accel.errors import UserError, cli_entry
from detcore.draw import VideoSink, draw, frame_rate, frames, image_files, open_camera, open_video

DEMO_TYPES = ("image", "video", "webcam")
DEFAULT_OUTPUT_DIR = "./YOLOX_outputs"      # the exps' output_dir, for --onnx runs that have no exp
ONNX_SCOPE = ("with --onnx the model, its input size and its classes come from the .onnx: -c, -f, -n, --tsize, "
              "--fuse, --device, precision flags and exp overrides do not apply")


class DemoArgParser(argparse.ArgumentParser):
    """argparse whose errors are one ``error:`` line (exit 2), for the torch-free --onnx path."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def add_demo_args(parser, onnx=False):
    """The flags both paths share: what to read (upstream's demo types) and what to do with it."""
    parser.add_argument("demo", choices=DEMO_TYPES,
                        help="image: --path is an image or a folder; video: --path is a video file; "
                             "webcam: --camid")
    parser.add_argument("--path", default=None, help="image, folder of images, or video file")
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
    return parser


def make_parser():
    """The PyTorch path's flags (a YOLOX checkpoint through its exp)."""
    from accel import add_device_args, add_precision_args
    from yolox.core.cli import ArgParser, add_exp_args

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
    parser = DemoArgParser("demo.py --onnx", description="Run an exported YOLOX or SSD300 .onnx with onnxruntime")
    add_demo_args(parser, onnx=True)
    parser.add_argument("-expn", "--experiment-name", dest="experiment_name", default=None,
                        help="output subfolder (default: the .onnx file's stem)")
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--class_names", "--class-names", dest="class_names", default=None,
                        help="comma-separated class names (default: those the exporter stored, COCO's "
                             "for 80 classes, else numbers)")
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
    """Letterbox -> model -> postprocess -> boxes in original image pixels."""

    def __init__(self, model, exp, device, precision, legacy=False):
        from yolox.data import ValTransform

        self.model, self.exp, self.device, self.precision = model, exp, device, precision
        self.preproc = ValTransform(legacy=legacy)

    def __call__(self, img):
        """``img``: BGR uint8. Rows (x1, y1, x2, y2, score, class) as a float32 numpy array."""
        import torch

        from yolox.utils import postprocess

        h, w = img.shape[:2]
        size = self.exp.test_size
        x, _ = self.preproc(img, None, size)
        x = torch.from_numpy(x).unsqueeze(0).to(self.device)
        with torch.no_grad(), self.precision.autocast():
            out = self.model(x)
        det = postprocess(out, self.exp.num_classes, self.exp.test_conf, self.exp.nmsthre)[0]
        det = det.float().cpu()
        scale = min(size[0] / h, size[1] / w)
        boxes = det[:, :4] / scale
        rows = torch.cat([boxes, (det[:, 4] * det[:, 5])[:, None], det[:, 6:7]], dim=1)
        # draw only what can be drawn: an undertrained model may decode huge or nan boxes
        return rows[torch.isfinite(rows).all(dim=1)].numpy()


def open_source(args):
    """What the demo reads, opened before any model loads (a wrong path fails in a second):
    the image files, or the video / camera capture."""
    if args.demo == "webcam":
        return open_camera(args.camid)
    if args.path is None:
        raise UserError(f"{args.demo} needs --path ({'an image or a folder' if args.demo == 'image' else 'a video file'})")
    return image_files(args.path) if args.demo == "image" else open_video(args.path)


def print_boxes(dets, names):
    for x1, y1, x2, y2, score, cls in dets.tolist():
        print(f"  {names[int(cls)]} {score:.3f} [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")


def image_demo(files, predict, names, out_dir, save):
    for path in files:
        img = cv2.imread(str(path))
        if img is None:
            print(f"skipped {path}: not a readable image", file=sys.stderr)
            continue
        t0 = time.time()
        dets = predict(img)
        print(f"{path}: {len(dets)} detections in {1000 * (time.time() - t0):.1f} ms")
        if save:
            out_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out_dir / path.name), draw(img, dets, names))
        else:
            print_boxes(dets, names)
    if save:
        print(f"saved drawn images under {out_dir}")


def stream_demo(args, cap, predict, names, out_dir):
    """Frame by frame from a video file or a camera; with --save_result an annotated mp4 at the
    source's rate and size (``<video name>.mp4`` or ``camera.mp4``). Ctrl-C ends a webcam run
    normally (a camera never ends by itself), and the video written so far is complete."""
    name = Path(args.path).with_suffix(".mp4").name if args.demo == "video" else "camera.mp4"
    sink = VideoSink(out_dir / name, frame_rate(cap)) if args.save_result else None
    done = 0
    try:
        for frame in frames(cap):
            t0 = time.time()
            dets = predict(frame)
            done += 1
            print(f"frame {done}: {len(dets)} detections in {1000 * (time.time() - t0):.1f} ms")
            if sink is not None:
                sink.write(draw(frame, dets, names))
            else:
                print_boxes(dets, names)
    except KeyboardInterrupt:
        if args.demo != "webcam":
            raise
        print(f"stopped after {done} frames (Ctrl-C)")
    finally:
        if sink is not None:
            sink.close()
    if not done:
        source = f"--path {args.path}" if args.demo == "video" else f"--camid {args.camid}"
        raise UserError(f"{source}: no frame could be read from it")
    if sink is not None:
        print(f"saved the annotated video ({sink.count} frames) to {sink.path}")


def run(args, source, predict, names, out_dir):
    if args.demo == "image":
        image_demo(source, predict, names, out_dir, args.save_result)
    else:
        stream_demo(args, source, predict, names, out_dir)


def timestamp():
    return time.strftime("%Y_%m_%d_%H_%M_%S")


def onnx_main(argv):
    """--onnx: detcore.onnx_runtime on numpy + onnxruntime + OpenCV; nothing imports torch."""
    from detcore.onnx_runtime import OnnxDetector

    parser = make_onnx_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise UserError(f"demo.py --onnx: unrecognized arguments: {' '.join(extra)} ({ONNX_SCOPE})")
    source = open_source(args)
    detector = OnnxDetector(args.onnx, conf=args.conf, nms=args.nms, class_names=args.class_names,
                            legacy=args.legacy)
    print(detector.describe())
    out_dir = Path(args.output_dir) / (args.experiment_name or Path(args.onnx).stem) / "vis_res" / timestamp()
    run(args, source, detector, detector.names, out_dir)


def torch_main(argv):
    from accel import Precision, resolve_device
    from yolox.core.cli import build_exp, load_model

    args = make_parser().parse_intermixed_args(argv)
    exp = build_exp(args, need_data=False)
    exp.test_conf, exp.nmsthre = args.conf, args.nms
    if args.tsize is not None:
        exp.test_size = (args.tsize, args.tsize)
    source = open_source(args)
    device = resolve_device(args)
    precision = Precision.from_args(args, device)
    predictor = Predictor(load_model(exp, args, device), exp, device, precision, args.legacy)
    out_dir = Path(exp.output_dir) / args.experiment_name / "vis_res" / timestamp()
    run(args, source, predictor, class_names(exp), out_dir)


@cli_entry
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--onnx" or a.startswith("--onnx=") for a in argv):
        return onnx_main(argv)
    return torch_main(argv)


if __name__ == "__main__":
    main()
