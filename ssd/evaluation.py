"""SSD's distributed COCO evaluation: detections of this rank's shard -> COCO rows -> gathered
and scored once (``detcore.evaluation.coco_eval``), with the validation loss of the same forward and,
on a VOC split, the devkit's AP table."""
import contextlib
import time

import numpy as np
import torch
from loguru import logger

import accel
from accel import watchdog
from accel.policy import postprocess_device
from detcore.evaluation import voc_eval
from detcore.evaluation import report as eval_report
from detcore.evaluation.coco_eval import gather_and_score
from detcore.training.progress import Progress
from detcore.training.report import LossMean
from detcore.boxes import xyxy2xywh
from ssd.step import to_model_input

VAL_LOSS_KEYS = ("loss", "loc_loss", "conf_loss")    # Loss.terms


def detections_to_coco(decoded, img_ids, sizes, cat_ids):
    """Decoded per-image (ltrb normalised, labels 1..K, scores) -> numpy rows for ``COCO.loadRes``.

    Rows are [image_id, x, y, w, h, score, category_id] in original-image pixels with the
    original COCO category ids (label i maps back to ``cat_ids[i - 1]``).
    """
    cat_lookup = torch.tensor([0] + list(cat_ids), dtype=torch.float64)
    rows = []
    for (boxes, labels, scores), img_id, (h, w) in zip(decoded, img_ids.tolist(), sizes.tolist()):
        boxes = boxes.detach().to("cpu", torch.float64) * torch.tensor([w, h, w, h], dtype=torch.float64)
        xywh = xyxy2xywh(boxes)
        ids = torch.full((len(boxes), 1), float(img_id), dtype=torch.float64)
        rows.append(torch.cat([ids, xywh, scores.detach().to("cpu", torch.float64)[:, None],
                               cat_lookup[labels.detach().cpu()][:, None]], dim=1))
    return torch.cat(rows).numpy() if rows else np.zeros((0, 7))


@torch.no_grad()
def evaluate(model, loader, encoder, dataset, device, nms_valid_thresh=0.05, precision=None, loss_fn=None,
             keep_rows=False):
    """COCO scores of this rank's loader shard, gathered and scored once (same result on every
    rank). Batch-norm statistics are averaged over ranks first, so N processes score the model
    a one-process evaluation would.

    With ``loss_fn`` (``ssd.loss.Loss``) the same forward also gives the training loss of the
    val batches (targets: the encoder's encoding of the val boxes, as in training), averaged
    over every rank's images: ``result.val_loss`` = {loss, loc_loss, conf_loss} (not set without
    ``loss_fn``). It stays on the device until the one transfer at the end. ``keep_rows``: the
    result carries every rank's detection rows (``--analyze``)."""
    was_training = model.training
    accel.all_reduce_norm(model)
    model.eval()
    rows, seconds, images = [], 0.0, 0
    val_loss = LossMean(VAL_LOSS_KEYS)
    progress = Progress(len(loader), "eval", enabled=accel.is_main_process())
    for i, (imgs, boxes, labels, img_ids, sizes) in enumerate(loader):
        t0 = time.time()
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            ploc, plabel = model(to_model_input(imgs, device))
        if loss_fn is not None:
            gloc, glabel = encoder.encode_batch(boxes, labels)
            terms = loss_fn.terms(ploc, plabel, gloc.transpose(1, 2).contiguous().to(device, non_blocking=True),
                                  glabel.to(device, non_blocking=True))
            val_loss.add(terms, weight=len(imgs))
        accel.mark_step(device)
        host = postprocess_device(device)      # decoding + NMS on the host on HPU, as Habana's
        decoded = encoder.decode_batch(ploc.to(host), plabel.to(host), criteria=0.5, max_output=200,
                                       nms_valid_thresh=nms_valid_thresh)
        rows.append(detections_to_coco(decoded, img_ids, sizes, dataset.cat_ids))
        seconds += time.time() - t0
        images += len(imgs)
        progress.update(i + 1)
        watchdog.tick()               # an evaluation batch is progress, not a hang
    local = np.concatenate(rows) if rows else np.zeros((0, 7))
    # the pycocotools index is built on the main process only (the other ranks never need it)
    result = gather_and_score(lambda: dataset.coco, local, dataset.ids, seconds, images, keep_rows=keep_rows)
    if hasattr(getattr(dataset, "source", None), "difficult"):
        # a VOC split (detcore.data.voc): the COCO numbers above drive the loop (--threshold), the
        # VOC devkit's table (AP per class at IoU 0.5, 11-point for VOC2007) is printed with them
        voc = voc_eval.gather_and_score(dataset.source, voc_eval.rows_from_coco(local, dataset.cat_ids))
        result.summary += "VOC devkit AP:\n" + voc.summary
    if loss_fn is not None:
        result.val_loss = val_loss.means(gather=True) or None
    model.train(was_training)
    return result


def val_loss_text(val_loss):
    """``; val loss 1.2345 (loc 0.4, conf 0.8)`` for the evaluation log line ("" without one)."""
    if not val_loss:
        return ""
    return (f"; val loss {val_loss['loss']:.4f} (loc {val_loss['loc_loss']:.4f}, "
            f"conf {val_loss['conf_loss']:.4f})")


def report_evaluation(result, checkpoint, val_set, out_dir, analyze=0):
    """What ``--eval-only`` reports (main process): the COCO summary in the log, the evaluation's
    files (per-class csv, confusion matrix, plots; ``--analyze K``'s error images) and the
    ``AP50_95``/``AP50`` lines on stdout, as ``tools/eval.py`` prints them."""
    logger.info(f"{checkpoint}: COCO mAP {result.ap50_95:.4f}, AP50 {result.ap50:.4f}"
                f"{val_loss_text(getattr(result, 'val_loss', None))}\n{result.summary}")
    for path in eval_report.write_evaluation(result, out_dir, plots=True):
        logger.info(f"wrote {path}")
    if analyze:
        eval_report.analyze(result, val_set.coco, result.rows, val_set.ids, val_set.source, analyze, out_dir)
    print(f"AP50_95: {result.ap50_95:.4f}\nAP50: {result.ap50:.4f}", flush=True)
