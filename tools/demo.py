"""Run a YOLOX checkpoint on an image or a folder of images and draw the detections:
python tools/demo.py image -n yolox-s -c CKPT --path IMG_OR_DIR --conf 0.25 --nms 0.45 --tsize 640 --save_result

With --save_result the drawn images go to <output_dir>/<experiment>/vis_res/<timestamp>/ and the
folder is printed; without it the detections are printed one line per box.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import torch  # noqa: E402

from accel import Precision, add_device_args, add_precision_args, resolve_device  # noqa: E402
from accel.errors import cli_entry  # noqa: E402
from detcore.draw import draw, image_files  # noqa: E402
from yolox.core.cli import ArgParser, add_exp_args, build_exp, load_model  # noqa: E402


def make_parser():
    parser = ArgParser("demo.py", description="YOLOX image demo")
    parser.add_argument("demo", choices=("image",), help="demo type (image: a file or a folder)")
    add_exp_args(parser)
    parser.add_argument("--path", required=True, help="an image or a folder of images")
    parser.add_argument("-c", "--ckpt", required=True, help="checkpoint to run")
    parser.add_argument("--conf", type=float, default=0.3)
    parser.add_argument("--nms", type=float, default=0.3)
    parser.add_argument("--tsize", type=int, default=None)
    parser.add_argument("--save_result", "--save-result", dest="save_result", action="store_true")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--fuse", action="store_true")
    add_device_args(parser)
    add_precision_args(parser)
    parser.add_argument("opts", nargs="*", help="exp overrides: key value ...")
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

    @torch.no_grad()
    def __call__(self, img):
        from yolox.utils import postprocess

        h, w = img.shape[:2]
        size = self.exp.test_size
        x, _ = self.preproc(img, None, size)
        x = torch.from_numpy(x).unsqueeze(0).to(self.device)
        with self.precision.autocast():
            out = self.model(x)
        det = postprocess(out, self.exp.num_classes, self.exp.test_conf, self.exp.nmsthre)[0]
        det = det.float().cpu()
        scale = min(size[0] / h, size[1] / w)
        boxes = det[:, :4] / scale
        rows = torch.cat([boxes, (det[:, 4] * det[:, 5])[:, None], det[:, 6:7]], dim=1)
        # draw only what can be drawn: an undertrained model may decode huge or nan boxes
        return rows[torch.isfinite(rows).all(dim=1)].numpy()


@cli_entry
def main(argv=None):
    args = make_parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    exp = build_exp(args, need_data=False)
    exp.test_conf, exp.nmsthre = args.conf, args.nms
    if args.tsize is not None:
        exp.test_size = (args.tsize, args.tsize)
    files = image_files(args.path)
    device = resolve_device(args)
    precision = Precision.from_args(args, device)
    predictor = Predictor(load_model(exp, args, device), exp, device, precision, args.legacy)
    names = class_names(exp)
    out_dir = Path(exp.output_dir) / args.experiment_name / "vis_res" / time.strftime("%Y_%m_%d_%H_%M_%S")
    for path in files:
        img = cv2.imread(str(path))
        if img is None:
            print(f"skipped {path}: not a readable image", file=sys.stderr)
            continue
        t0 = time.time()
        dets = predictor(img)
        print(f"{path}: {len(dets)} detections in {1000 * (time.time() - t0):.1f} ms")
        if args.save_result:
            out_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out_dir / path.name), draw(img, dets, names))
        else:
            for x1, y1, x2, y2, score, cls in dets.tolist():
                print(f"  {names[int(cls)]} {score:.3f} [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    if args.save_result:
        print(f"saved drawn images under {out_dir}")


if __name__ == "__main__":
    main()
