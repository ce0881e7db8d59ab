"""COCO mAP evaluation of YOLOX, single-process or sharded across ranks (scoring: detcore), and
the validation loss: the training loss on the val set, from the same forward as the detections."""
import time

import numpy as np
import torch

from accel import is_main_process, mark_step
from accel.policy import postprocess_device
from detcore.boxes import xyxy2xywh
from detcore.evaluation.coco_eval import drop_non_finite, gather_and_score, score
from detcore.training.progress import Progress
from detcore.training.report import LossMean

# the training loss terms the validation loss reports (num_fg is a count, not a loss)
VAL_LOSS_KEYS = ("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss")


def detections_to_rows(outputs, img_hw, img_ids, img_size, class_ids):
    """Per-image postprocess outputs -> one float64 array [N, 7] of
    (image_id, x, y, w, h, score, category_id) in original-image pixels, the layout
    ``COCO.loadRes`` accepts directly (no per-box dicts).

    outputs: list of Tensor[K,7] (x1,y1,x2,y2,obj,cls_conf,cls) in letterboxed input pixels.
    img_hw: (heights, widths) of the original images; img_size: the network input (h, w).
    """
    class_ids = torch.as_tensor(class_ids, dtype=torch.float64)
    rows = []
    for out, h, w, img_id in zip(outputs, img_hw[0], img_hw[1], img_ids):
        if out is None or out.shape[0] == 0:
            continue
        out = out.detach().to("cpu", torch.float64)
        scale = min(img_size[0] / float(h), img_size[1] / float(w))
        xywh = xyxy2xywh(out[:, :4] / scale)
        ids = torch.full((out.shape[0], 1), float(img_id), dtype=torch.float64)
        score = (out[:, 4] * out[:, 5]).unsqueeze(1)
        cat = class_ids[out[:, 6].long()].unsqueeze(1)
        rows.append(torch.cat([ids, xywh, score, cat], dim=1))
    if not rows:
        return np.zeros((0, 7))
    return drop_non_finite(torch.cat(rows).numpy())


def loss_targets(dataset, img_ids, positions):
    """The training targets of a val batch: ``[B, M, 5]`` float32 rows of (class, cx, cy, w, h)
    in letterboxed input pixels, all-zero rows padding (the loss's convention), built from the
    val annotations (``dataset.load_anno``: xyxy + class in the letterboxed input). As
    ``TrainTransform``, boxes 1 px wide or high or less are left out.

    ``positions`` maps an image id to its dataset index (``np.searchsorted`` order: ids sorted
    by ``argsort``); one vectorised scatter pads the batch (no per-box Python loop)."""
    order, sorted_ids = positions
    ids = np.asarray(img_ids, dtype=np.int64).reshape(-1)
    index = order[np.searchsorted(sorted_ids, ids)]
    annos = [np.asarray(dataset.load_anno(int(i)), dtype=np.float64).reshape(-1, 5) for i in index]
    boxes = np.concatenate(annos)
    wh = boxes[:, 2:4] - boxes[:, :2]
    keep = np.minimum(wh[:, 0], wh[:, 1]) > 1
    image = np.repeat(np.arange(len(annos)), [len(a) for a in annos])[keep]
    rows = np.concatenate([boxes[keep, 4:5], (boxes[keep, :2] + boxes[keep, 2:4]) / 2, wh[keep]], axis=1)
    counts = np.bincount(image, minlength=len(annos))
    slot = np.arange(len(image)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.zeros((len(annos), max(int(counts.max(initial=0)), 1), 5), dtype=np.float32)
    out[image, slot] = rows
    return torch.from_numpy(out)


def coco_summary(coco_gt, rows, img_ids):
    """Score detection rows; returns (ap50_95, ap50, summary text with per-class table)."""
    result = score(coco_gt, rows, img_ids)
    return result.ap50_95, result.ap50, result.summary


class COCOEvaluator:
    """Runs a model over a COCO val loader and scores it with pycocotools (upstream interface).

    With ``val_loss`` (on by default) and a model whose head takes eval-mode targets (YOLOX's:
    ``YOLOXHead.predict_with_loss``) over a data set with ``load_anno``, the same forward also
    gives the training loss of every val batch, averaged over the val set (``val_loss``); else
    the evaluation is the plain one and ``val_loss`` is None. ``last_result`` keeps the newest
    full ``CocoScore`` (with ``val_loss`` attached); ``evaluate`` returns upstream's tuple.
    """

    def __init__(self, dataloader, img_size, confthre, nmsthre, num_classes, testdev=False):
        self.dataloader = dataloader
        self.img_size = tuple(img_size)
        self.confthre = confthre
        self.nmsthre = nmsthre
        self.num_classes = num_classes
        self.testdev = testdev
        self.with_val_loss = not testdev      # test-dev has no public annotations
        self.last_result = None
        self.keep_rows = False                # --analyze: last_result.rows holds every rank's rows
        self._loss = LossMean(VAL_LOSS_KEYS)
        self._loss_on = False
        self._val_loss = None                 # (done,) once reduced over the ranks
        self._positions = None

    def computes_loss(self, model):
        """Whether ``predict`` can take the loss from its forward: the head takes targets in eval
        mode and the data set lists its annotations."""
        from yolox.models.yolo_head import YOLOXHead

        dataset = self.dataloader.dataset
        return (self.with_val_loss and isinstance(getattr(model, "head", None), YOLOXHead)
                and hasattr(dataset, "load_anno") and hasattr(dataset, "ids"))

    def _targets(self, img_ids):
        dataset = self.dataloader.dataset
        if self._positions is None:
            ids = np.asarray(dataset.ids, dtype=np.int64).reshape(-1)
            order = np.argsort(ids, kind="stable")
            self._positions = (order, ids[order])
        return loss_targets(dataset, img_ids, self._positions)

    @torch.no_grad()
    def predict(self, model, half=False):
        """Detections of this rank's shard as rows (see ``detections_to_rows``) + timing; the
        batches' validation loss, when computed, stays on the device until ``val_loss``."""
        from yolox.utils import postprocess

        device = next(model.parameters()).device
        dtype = torch.float16 if half else torch.float32
        model = model.eval()
        if half:
            model = model.half()
        dataset = self.dataloader.dataset
        self._loss.reset()
        self._loss_on, self._val_loss = self.computes_loss(model), None
        progress = Progress(len(self.dataloader), "eval", enabled=is_main_process())
        rows, infer_s, n_img = [], 0.0, 0
        for i, (imgs, _, img_hw, img_ids) in enumerate(self.dataloader):
            t0 = time.time()
            imgs = imgs.to(device=device, dtype=dtype)
            if self._loss_on:
                targets = self._targets(img_ids).to(device, non_blocking=True)
                out, losses = model(imgs, targets)
                self._loss.add(losses, weight=imgs.shape[0])
            else:
                out = model(imgs)
            mark_step(device)
            # NMS on the host on HPU (Habana's evaluator does the same)
            dets = postprocess(out.to(postprocess_device(device)), self.num_classes, self.confthre,
                               self.nmsthre)
            rows.append(detections_to_rows(dets, img_hw, img_ids, self.img_size, dataset.class_ids))
            infer_s += time.time() - t0
            n_img += imgs.shape[0]
            progress.update(i + 1)
        rows = np.concatenate(rows) if rows else np.zeros((0, 7))
        return rows, infer_s, n_img

    def val_loss(self, distributed=False):
        """{term: mean over the val images} of the last ``predict``'s loss on every rank, or None
        when it computed none. The first call after a ``predict`` is a collective (all ranks
        call it; ``evaluate`` does); later calls return the same dict."""
        if self._val_loss is None:
            means = self._loss.means(gather=distributed) if self._loss_on else {}
            self._val_loss = (means or None,)
        return self._val_loss[0]

    def evaluate(self, model, distributed=False, half=False, return_outputs=False):
        """(ap50_95, ap50, summary) on every rank; with ``return_outputs`` also the detection rows.
        The summary starts with the validation loss line when one was computed."""
        was_training = model.training
        rows, infer_s, n_img = self.predict(model, half)
        dataset = self.dataloader.dataset
        # the index is built on the main process only, where it is scored (``lambda``: not here)
        result = gather_and_score(lambda: dataset.coco, rows, dataset.ids, infer_s, n_img,
                                  keep_rows=self.keep_rows)
        result.val_loss = self.val_loss(distributed)
        self.last_result = result
        model.train(was_training)
        out = (result.ap50_95, result.ap50, val_loss_line(result.val_loss) + result.summary)
        return (out, rows) if return_outputs else out


def val_loss_line(val_loss):
    """The summary's first line: the validation loss terms ("" when none was computed)."""
    if not val_loss:
        return ""
    terms = ", ".join(f"{k} {v:.4f}" for k, v in val_loss.items())
    return f"validation loss (the training loss on the val set): {terms}\n"
