"""Track the MOTChallenge sequences of a data set and score the tracks: detector + ByteTrack over
every frame, one MOTChallenge result file per sequence (``DIR/SEQ.txt``), and HOTA (DetA, AssA),
MOTA, IDF1, ID switches, false positives and misses per sequence and combined, from TrackEval
(``detcore.evaluation.tracking``), printed and written as ``DIR/track_eval.csv``.

    python tools/eval_track.py -d DATA --onnx MODEL.onnx --output-dir DIR     (no torch)
    python tools/eval_track.py -d DATA -f EXP.py -c CKPT --output-dir DIR     (a YOLOX checkpoint)
    python tools/eval_track.py -d DATA --public-dets --output-dir DIR         (MOTChallenge's protocol)

``--public-dets`` tracks each sequence's ``det/det.txt`` (frame, -1, x, y, w, h, score, ...)
instead of running a detector, so trackers are compared on the same detections. The split is
``--split`` of the MOT root (``detcore.data.mot``: its ``val/`` folder, or the second half of the
train sequences' frames when there is none). Scores are class-agnostic, as MOTChallenge's.
"""
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from loguru import logger

from accel.errors import ArgParser, UserError, cli_entry
from detcore.data import mot
from detcore.data.writers import mot_frame_name
from detcore.deploy.track import TRACK_CONF, TRACK_NMS, add_tracker_args, track, tracker_from_args
from detcore.evaluation import tracking
from detcore.files import write_rows

CSV_NAME = "track_eval.csv"


def make_parser():
    parser = ArgParser("eval_track.py", description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--data", required=True, help="a MOTChallenge root (or a folder of sequences)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True,
                        help="where SEQ.txt result files and track_eval.csv go")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--onnx", metavar="MODEL", help="an exported YOLOX / SSD300 (.onnx, or an OpenVINO .xml)")
    what.add_argument("-c", "--ckpt", help="a YOLOX checkpoint (with -f/-n)")
    what.add_argument("--public-dets", action="store_true", help="track det/det.txt of each sequence")
    parser.add_argument("-f", "--exp_file", "--exp-file", dest="exp_file", default=None)
    parser.add_argument("-n", "--name", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--conf", type=float, default=TRACK_CONF,
                        help=f"detector score threshold (default {TRACK_CONF}: the tracker uses low scores)")
    parser.add_argument("--nms", type=float, default=TRACK_NMS, help=f"detector NMS IoU (default {TRACK_NMS})")
    parser.add_argument("--tsize", type=int, default=None, help="YOLOX test size (-c)")
    parser.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=1)
    add_tracker_args(parser)
    return parser


def detector(args):
    """(detect_batch, what) for --onnx or -c; None for --public-dets."""
    if args.public_dets:
        return None, "public detections"
    if args.onnx:
        from detcore.deploy.runtime import Detector

        det = Detector(args.onnx, conf=args.conf, nms=args.nms)
        return det.detect_batch, args.onnx
    from accel import Precision, resolve_device
    from yolox.core.cli import build_exp, load_model
    from yolox.tools.demo import Predictor

    args.experiment_name, args.opts, args.data_dir = None, [], None
    exp = build_exp(args, need_data=False)
    exp.test_conf, exp.nmsthre = args.conf, args.nms
    if args.tsize is not None:
        exp.test_size = (args.tsize, args.tsize)
    device = resolve_device(args)
    model = load_model(exp, args, device)
    return Predictor(model, exp, device, Precision.from_args(args, device)).predict_batch, args.ckpt


def public_detections(seq, first, last):
    rows = tracking.read_mot_rows(seq.folder / "det" / "det.txt")
    by_frame = {f: rows[rows[:, 0] == f] for f in range(first, last + 1)}
    for f in range(first, last + 1):
        r = by_frame[f]
        boxes = np.column_stack([r[:, 2:4], r[:, 2:4] + r[:, 4:6]])
        yield None, np.column_stack([boxes, r[:, 6], np.zeros(len(r))])


class TimedTracker:
    """A tracker that adds the seconds its updates take to ``clock[0]``: the tracker's share of
    the detector + tracker time."""

    def __init__(self, tracker, clock):
        self.tracker, self.clock = tracker, clock

    def update(self, *args):
        t0 = time.perf_counter()
        out = self.tracker.update(*args)
        self.clock[0] += time.perf_counter() - t0
        return out


def track_sequence(seq, first, last, detect_batch, args, clock):
    """Result rows [frame, id, x, y, w, h, score] of one sequence's frames first..last."""
    tracker = TimedTracker(tracker_from_args(args, frame_rate=seq.frame_rate or 30), clock)
    rows = []
    if detect_batch is None:
        pairs = ((img, tracker.update(d[:, :4], d[:, 4], d[:, 5].astype(int)))
                 for img, d in public_detections(seq, first, last))
    else:
        paths = [seq.folder / seq.im_dir / mot_frame_name(f, seq.ext) for f in range(first, last + 1)]
        pairs = track((_read(p) for p in paths), detect_batch, tracker, args.batch_size)
    for frame, (_, out) in enumerate(pairs, first):
        xywh = np.column_stack([out.boxes[:, :2], out.boxes[:, 2:] - out.boxes[:, :2]])
        rows += [[frame, i, *b, s] for i, b, s in zip(out.ids, xywh, out.scores)]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 7)


def _read(path):
    img = cv2.imread(str(path))
    if img is None:
        raise UserError(f"{path}: missing or not an image (a frame of the sequence)")
    return img


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(sys.argv[1:] if argv is None else argv)
    folder, part = mot.mot_split(args.data, args.split, flag="--data")
    seqs = [mot.read_seqinfo(p, n) for n, p in enumerate(mot.sequences_in(folder), 1)]
    for seq in seqs:           # what is missing is said before any frame is tracked
        for need in [seq.folder / "gt" / "gt.txt"] + ([seq.folder / "det" / "det.txt"] if args.public_dets else []):
            if not need.is_file():
                what = "ground truth to score against" if need.parent.name == "gt" else "public detections"
                raise UserError(f"{need} does not exist: {seq.name} has no {what}")
    detect_batch, what = detector(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info(f"tracking {len(seqs)} sequence(s) of {folder} ({part} frames) with {what}")
    scored, t0, frames, clock = {}, time.time(), 0, [0.0]
    for seq in seqs:
        first, last = mot.part_frames(seq.length, part)
        gt_path = seq.folder / "gt" / "gt.txt"
        res = track_sequence(seq, first, last, detect_batch, args, clock)
        tracking.write_mot_rows(out / f"{seq.name}.txt", res[:, 0], res[:, 1], res[:, 2:6], res[:, 6])
        gt, _ = mot.parse_gt(gt_path)
        gt = gt[(gt[:, 0] >= first) & (gt[:, 0] <= last)]
        shift = np.array([first - 1] + [0] * 8)
        scored[seq.name] = (gt - shift, res - shift[:7], last - first + 1)
        frames += last - first + 1
    seconds = time.time() - t0
    scores = tracking.evaluate(scored)
    print(tracking.format_table(scores))
    share = 100 * clock[0] / max(seconds, 1e-9)
    print(f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} fps, detector + tracker; "
          f"tracker {1000 * clock[0] / max(frames, 1):.2f} ms/frame, {share:.1f}% of the time)")
    write_rows(out / CSV_NAME, [{"sequence": k, **v} for k, v in scores.items()])
    return scores


if __name__ == "__main__":
    main()
