"""SSD ground-truth encoding speed: one batched call vs a loop of per-image calls (images/s).

Usage: python bench/ssd_encode.py [--batch 32] [--boxes 1 10 50] [--repeat 30] [--compare]
Prints one JSON line per box count, after one line describing the machine.

``--compare`` also times the real peer, the MLPerf reference's per-image ``Encoder.encode``
(REF_SSD_DIR, default /work/ref_compare/mlperf_ssd; see bench/get_mlperf_ssd.sh), on the same
boxes through bench/ssd_ref_runner.py, and checks that both encodings agree (labels equal, boxes
allclose): a speed-up of an encoder that encodes differently would mean nothing.
"""
import argparse
import resource

import torch

# common also puts the repo root on sys.path
from common import REF_SSD_DIR, emit, has_mlperf_ssd, machine, run_mlperf_ssd, time_best

from ssd import Encoder, dboxes300_coco  # noqa: E402


def random_batch(batch, boxes, gen):
    """``batch`` images with ``boxes`` random ltrb boxes each (labels 1..80, no padding)."""
    xy = torch.rand(batch, boxes, 2, generator=gen) * 0.8
    wh = 0.02 + torch.rand(batch, boxes, 2, generator=gen) * (1 - xy - 0.02)
    return torch.cat((xy, xy + wh), dim=2), torch.randint(1, 81, (batch, boxes), generator=gen)


def agreement(ours, ref):
    """How far two encodings ([B, A, 4] xywh, [B, A]) are apart: label mismatches and box diff."""
    (loc, lab), (ref_loc, ref_lab) = ours, ref
    return dict(labels_equal=bool(torch.equal(lab, ref_lab)),
                label_mismatches=int((lab != ref_lab).sum()),
                boxes_allclose=bool(torch.allclose(loc, ref_loc, rtol=1e-5, atol=1e-6)),
                max_box_abs_diff=float((loc - ref_loc).abs().max()))


def minor_faults_per_call(fn, calls=10):
    """Minor page faults per ``fn()`` call. glibc sometimes hands freed heap memory back to the
    kernel after each call and faults it in again on the next (thousands of faults per call,
    3-4x the time at 1 box on a 2-core VM); this figure says which state a run was in."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--compare", action="store_true",
                        help="also time the MLPerf reference's per-image encoder (REF_SSD_DIR)")
    parser.add_argument("--ref-dir", default=REF_SSD_DIR, help="the extracted MLPerf SSD reference")
    args = parser.parse_args()
    if args.compare and not has_mlperf_ssd(args.ref_dir):
        parser.error(f"--compare: {args.ref_dir} has no ssd300.py (run bash bench/get_mlperf_ssd.sh)")

    encoder = Encoder(dboxes300_coco())
    gen = torch.Generator().manual_seed(0)
    emit(bench="ssd_encode", **machine())
    cases = [(boxes, *random_batch(args.batch, boxes, gen)) for boxes in args.boxes]
    ref = {}
    if args.compare:
        result, encodings = run_mlperf_ssd(args.ref_dir, "encode", {
            "repeat": args.repeat, "cases": [{"boxes": b, "labels": lab} for _, b, lab in cases]})
        ref = {c["boxes_per_image"]: (c["secs"], enc) for c, enc in zip(result["cases"], encodings)}
    for boxes, bboxes, labels in cases:
        def batch_call():
            return encoder.encode_batch(bboxes, labels)
        batched = time_best(batch_call, args.repeat)
        looped = time_best(lambda: [encoder.encode(b, lab) for b, lab in zip(bboxes, labels)], args.repeat)
        row = dict(bench="ssd_encode", batch=args.batch, boxes_per_image=boxes,
                   batched_images_per_s=round(args.batch / batched, 1),
                   per_image_images_per_s=round(args.batch / looped, 1),
                   speedup=round(looped / batched, 2),
                   batched_faults_per_call=minor_faults_per_call(batch_call))
        if boxes in ref:
            ref_secs, ref_encoding = ref[boxes]
            row.update(ref_images_per_s=round(args.batch / ref_secs, 1),
                       speedup_vs_ref=round(ref_secs / batched, 2),
                       **agreement(batch_call(), ref_encoding))
        emit(**row)


if __name__ == "__main__":
    main()
