"""YOLOX from Python with keyword arguments, no argparse namespace in sight:

    from yolox.api import Detector
    det = Detector("yolox-nano-shapes", data_dir="datasets/shapes", input_size=(160, 160))
    det.train(max_epoch=1, steps=4, batch_size=4, device="cpu")
    print(det.evaluate(device="cpu").ap50)
    found = det.predict("datasets/shapes/val2017/000000000001.jpg", device="cpu")
    det.export_onnx("yolox_nano_shapes.onnx")

Why a separate module: the command-line tools are thin layers over functions that take the
parsed flags; this class calls those same functions (``Trainer``, ``yolox.tools.eval.run_eval``,
the demo's ``Predictor``, the export tools' ``save_onnx``/``save_torchscript``), so a Python
caller gets exactly what the CLI computes. The keywords are the CLI flags' names (``batch_size``,
``device``, ``ckpt``, ``conf``, ...) and the exp settings (``max_epoch``, ``steps``,
``input_size``, ...), checked the same way; an unknown keyword is a TypeError naming it.
"""
import copy
from collections import namedtuple
from pathlib import Path

import numpy as np

from accel.errors import UserError
from yolox.core.cli import apply_overrides, exportable_model, load_weights, resolve_data_dir
from yolox.core.options import ArgParser, keyword_options, train_parser

EvalResult = namedtuple("EvalResult", "ap50_95 ap50 summary")
EvalResult.__doc__ = "COCO AP50:95 and AP50 of an evaluation, and the printed COCO summary."

Detections = namedtuple("Detections", "boxes scores classes labels")
Detections.__doc__ = ("One image's detections: ``boxes`` [N, 4] float32 x1 y1 x2 y2 in the image's "
                      "pixels, ``scores`` [N] float32, ``classes`` [N] int64 class indices, "
                      "``labels`` the N class names.")

# CLI flags that pick the exp or relaunch processes: the Detector already holds its exp and runs
# in this process (start the script under torchrun for several), so they are not keywords here.
_NOT_KEYWORDS = {"name", "exp_file", "opts", "devices"}


def _override_text(value):
    """A Python value as the CLI's ``key value`` text, so ``exp.merge`` checks it as it checks
    the command line: (160, 160) -> "160,160"."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


class Detector:
    """A YOLOX experiment plus the checkpoint it works with.

    ``model``: a name ``-n`` accepts (``"yolox-s"``, ``"yolox-nano-shapes"``, see
    ``yolox.exp.build.EXP_NAMES``) or the path of an exp file (``-f``). ``ckpt``: the weights that
    ``evaluate``, ``predict`` and the exports use until ``train`` writes new ones (default: the
    CLI's, ``<output_dir>/<exp_name>/best_ckpt.pth``). ``data_dir``: the data, as ``--data_dir``
    takes it: a COCO root, a VOC devkit or a YOLO ``data.yaml`` (``detcore.data.layout``); its class
    names name ``predict``'s labels, and its class count becomes the model's where the exp has
    the default (``exp.sync_classes``). Any other keyword sets an exp attribute, as a trailing ``key value`` pair on
    the command line does (``input_size=(320, 320)``, ``max_epoch=10``).
    """

    def __init__(self, model, ckpt=None, data_dir=None, **exp_settings):
        from yolox.exp import get_exp

        path = Path(str(model))
        is_file = path.suffix == ".py" or path.is_file()
        self.exp = get_exp(str(path) if is_file else None, None if is_file else str(model))
        self.data_dir = None if data_dir is None else str(data_dir)
        self.ckpt = None if ckpt is None else Path(ckpt)
        self.set(**exp_settings)
        self._predictors = {}

    # ------------------------------------------------------------------ settings
    def set(self, **exp_settings):
        """Set exp attributes with the CLI's type and range checks; returns self."""
        known = self.exp.settings()
        unknown = sorted(set(exp_settings) - set(known))
        if unknown:
            raise TypeError(f"unknown exp setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        pairs = []
        for key, value in exp_settings.items():
            pairs += [key, _override_text(value)]
        apply_overrides(self.exp, pairs)
        self._predictors = {}
        return self

    def _options(self, parser, caller, options):
        """``options`` as the namespace the CLI's code reads (its defaults, then the keywords)."""
        refused = sorted(set(options) & _NOT_KEYWORDS)
        if refused:
            raise TypeError(f"{caller} does not take {', '.join(refused)} (the Detector holds its exp; "
                            "run several processes with torchrun)")
        return keyword_options(parser, caller, **options)

    def _data_exp(self, data_dir=None):
        """A copy of the exp with its data directory (``data_dir``, else the Detector's) resolved
        as the CLI resolves --data_dir."""
        exp = copy.copy(self.exp)
        exp.data_dir = resolve_data_dir(data_dir if data_dir is not None else self.data_dir, exp.data_dir)
        return exp

    def _weights(self, ckpt):
        """The checkpoint to use: ``ckpt``, else the Detector's, else the CLI's default."""
        chosen = ckpt if ckpt is not None else self.ckpt
        if chosen is None:
            chosen = Path(self.exp.output_dir) / self.exp.exp_name / "best_ckpt.pth"
        return Path(chosen)

    # ------------------------------------------------------------------ the four jobs
    def train(self, **options):
        """Train with ``Trainer``: keywords are tools/train.py's flags (``batch_size``, ``device``,
        ``ckpt``, ``resume``, ``seed``, ``fp16``, ...) and exp settings (``max_epoch``, ``steps``,
        ...; these stay set on ``self.exp``). Returns the best checkpoint's path, which becomes
        ``self.ckpt``."""
        from yolox.tools.train import check_args

        flags = set(vars(train_parser().parse_args([])))
        unknown = sorted(set(options) - flags - set(self.exp.settings()))
        if unknown:
            raise TypeError(f"Detector.train got unknown option(s) {', '.join(unknown)}: neither a "
                            "tools/train.py flag (e.g. batch_size, device, ckpt, resume, seed) "
                            "nor an exp setting (e.g. max_epoch, steps, input_size)")
        self.set(**{k: v for k, v in options.items() if k not in flags})
        flag_opts = {k: v for k, v in options.items() if k in flags}
        if "data_dir" in flag_opts:
            self.data_dir = str(flag_opts.pop("data_dir"))
        args = self._options(train_parser(), "Detector.train", flag_opts)
        check_args(args)
        self.exp.data_dir = resolve_data_dir(self.data_dir, self.exp.data_dir)
        trainer = self.exp.get_trainer(args)   # upstream exp files override get_trainer(self, args)
        trainer.train()
        best = trainer.file_name / "best_ckpt.pth"
        self.ckpt = best if best.is_file() else trainer.file_name / "latest_ckpt.pth"
        self._predictors = {}
        return self.ckpt

    def evaluate(self, **options):
        """COCO evaluation of the checkpoint (``ckpt=`` or ``self.ckpt``) on the val split through
        tools/eval.py's code; keywords are its flags (``batch_size``, ``device``, ``conf``,
        ``nms``, ``tsize``, ``fuse``, ``test``, ...), which apply to this call only."""
        from yolox.tools.eval import apply_eval_flags, make_parser, run_eval

        options["ckpt"] = str(self._weights(options.get("ckpt")))
        args = self._options(make_parser(), "Detector.evaluate", options)
        exp = self._data_exp(args.data_dir)
        args.experiment_name = args.experiment_name or exp.exp_name
        if args.seed is not None:
            exp.seed = args.seed
        apply_eval_flags(exp, args)
        return EvalResult(*run_eval(exp, args))

    def predict(self, image, conf=0.3, nms=0.3, tsize=None, ckpt=None, device=None, legacy=False,
                fuse=False, **precision):
        """Detections on ``image`` (a file path or a BGR uint8 array [H, W, 3]; a list of them
        gives a list) through the demo's ``Predictor`` (same letterbox, postprocess and
        thresholds as tools/demo.py, whose defaults these are). ``precision``: the precision
        flags (``fp16=True``, ``autocast=True``, ...)."""
        if isinstance(image, (list, tuple)):
            return [self.predict(im, conf, nms, tsize, ckpt, device, legacy, fuse, **precision)
                    for im in image]
        predictor, names = self._predictor(conf, nms, tsize, ckpt, device, legacy, fuse, precision)
        rows = predictor(_read_image(image))
        return Detections(rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32),
                          rows[:, 5].astype(np.int64), [names[int(c)] for c in rows[:, 5]])

    def track(self, frames, conf=0.01, nms=0.7, tsize=None, ckpt=None, device=None, tracker=None,
              **tracker_options):
        """Follow objects through ``frames``: a video file or stream URL, or an iterable of BGR
        images / image paths. Yields one ``Tracks`` per frame (``ids``, ``boxes`` x1 y1 x2 y2 in
        the frame's pixels, ``scores``, ``classes``) from the demo's ``Predictor`` and a
        ``detcore.deploy.tracker.ByteTracker`` (``tracker``, or one built from ``tracker_options``
        such as ``track_thresh``, ``track_buffer``, ``frame_rate``, ``class_agnostic``). ``conf`` /
        ``nms``: ByteTrack's detector settings (low-score boxes feed its second association)."""
        from detcore.deploy.track import track
        from detcore.deploy.tracker import ByteTracker

        predictor, _ = self._predictor(conf, nms, tsize, ckpt, device, False, False, {})
        if isinstance(frames, (str, Path)):
            from detcore.deploy.media import open_source

            source = open_source(str(frames), kind="video", flag="frames")
            tracker_options.setdefault("frame_rate", source.fps or 30)
            frames = (f.image for f in source.frames())
        else:
            frames = (_read_image(f) for f in frames)
        tracker = ByteTracker(**tracker_options) if tracker is None else tracker
        for _, tracks in track(frames, predictor.predict_batch, tracker):
            yield tracks

    def _predictor(self, conf, nms, tsize, ckpt, device, legacy, fuse, precision):
        """The demo's Predictor for these settings, kept so a loop over images loads weights once."""
        from accel import Precision, add_device_args, add_precision_args, resolve_device
        from yolox.tools.demo import Predictor, class_names

        key = (conf, nms, tsize, str(self._weights(ckpt)), device, legacy, fuse,
               tuple(sorted(precision.items())))
        if key not in self._predictors:
            parser = add_precision_args(add_device_args(ArgParser("predict")))
            args = keyword_options(parser, "Detector.predict", device=device, **precision)
            exp = copy.copy(self.exp)
            if self.data_dir is not None:
                from detcore.data.layout import class_names_of
                exp.sync_classes(names=class_names_of(resolve_data_dir(self.data_dir, None),
                                                      flag="data_dir"))
            exp.test_conf, exp.nmsthre = conf, nms
            if tsize is not None:
                apply_overrides(exp, ["test_size", f"{tsize},{tsize}"])
            dev = resolve_device(args)
            model = load_weights(exp, self._weights(ckpt), dev, fuse=fuse)
            predictor = Predictor(model, exp, dev, Precision.from_args(args, dev), legacy)
            self._predictors = {key: (predictor, class_names(exp))}
        return self._predictors[key]

    def export_onnx(self, path="yolox.onnx", ckpt=None, random_weights=False,
                    decode_in_inference=False, batch_size=1, opset=11, dynamic=False,
                    onnxsim=True, input_name="images", output_name="output"):
        """ONNX export through tools/export_onnx.py's code (its flags as keywords); returns the path."""
        from yolox.tools.export_onnx import save_onnx

        model = self._export_model(ckpt, random_weights, decode_in_inference, batch_size)
        return save_onnx(model, path, self.exp.test_size, batch_size, opset, input_name, output_name,
                         dynamic, onnxsim=onnxsim, class_names=getattr(self.exp, "class_names", None))

    def export_torchscript(self, path="yolox.torchscript.pt", ckpt=None, random_weights=False,
                           decode_in_inference=False, batch_size=1):
        """TorchScript export through tools/export_torchscript.py's code; returns the path."""
        from yolox.tools.export_torchscript import save_torchscript

        model = self._export_model(ckpt, random_weights, decode_in_inference, batch_size)
        return save_torchscript(model, path, self.exp.test_size, batch_size)

    def _export_model(self, ckpt, random_weights, decode_in_inference, batch_size):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        weights = None if random_weights and ckpt is None else str(self._weights(ckpt))
        return exportable_model(self.exp, weights, random_weights, decode_in_inference)


def _read_image(image):
    """A BGR uint8 [H, W, 3] array from a path or an array; one-line UserError otherwise."""
    import cv2

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(f"image array must be BGR uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        return image
    img = cv2.imread(str(image))
    if img is None:
        raise UserError(f"image {image} does not exist or is not a readable image")
    return img
