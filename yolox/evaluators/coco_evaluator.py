"""COCO mAP evaluation of YOLOX, single-process or sharded across ranks (scoring: detcore)."""
import time

import numpy as np
import torch

from accel import is_main_process, mark_step
from accel.policy import postprocess_device
from detcore.coco_eval import drop_non_finite, gather_and_score, score
from detcore.progress import Progress


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
        xyxy = out[:, :4] / scale
        wh = xyxy[:, 2:] - xyxy[:, :2]
        ids = torch.full((out.shape[0], 1), float(img_id), dtype=torch.float64)
        score = (out[:, 4] * out[:, 5]).unsqueeze(1)
        cat = class_ids[out[:, 6].long()].unsqueeze(1)
        rows.append(torch.cat([ids, xyxy[:, :2], wh, score, cat], dim=1))
    if not rows:
        return np.zeros((0, 7))
    return drop_non_finite(torch.cat(rows).numpy())


def coco_summary(coco_gt, rows, img_ids):
    """Score detection rows; returns (ap50_95, ap50, summary text with per-class table)."""
    result = score(coco_gt, rows, img_ids)
    return result.ap50_95, result.ap50, result.summary


class COCOEvaluator:
    """Runs a model over a COCO val loader and scores it with pycocotools (upstream interface)."""

    def __init__(self, dataloader, img_size, confthre, nmsthre, num_classes, testdev=False):
        self.dataloader = dataloader
        self.img_size = tuple(img_size)
        self.confthre = confthre
        self.nmsthre = nmsthre
        self.num_classes = num_classes
        self.testdev = testdev

    @torch.no_grad()
    def predict(self, model, half=False):
        """Detections of this rank's shard as rows (see ``detections_to_rows``) + timing."""
        from yolox.utils import postprocess

        device = next(model.parameters()).device
        dtype = torch.float16 if half else torch.float32
        model = model.eval()
        if half:
            model = model.half()
        dataset = self.dataloader.dataset
        progress = Progress(len(self.dataloader), "eval", enabled=is_main_process())
        rows, infer_s, n_img = [], 0.0, 0
        for i, (imgs, _, img_hw, img_ids) in enumerate(self.dataloader):
            t0 = time.time()
            out = model(imgs.to(device=device, dtype=dtype))
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

    def evaluate(self, model, distributed=False, half=False, return_outputs=False):
        """(ap50_95, ap50, summary) on every rank; with ``return_outputs`` also the detection rows."""
        was_training = model.training
        rows, infer_s, n_img = self.predict(model, half)
        dataset = self.dataloader.dataset
        # the index is built on the main process only, where it is scored (``lambda``: not here)
        result = gather_and_score(lambda: dataset.coco, rows, dataset.ids, infer_s, n_img)
        model.train(was_training)
        out = (result.ap50_95, result.ap50, result.summary)
        return (out, rows) if return_outputs else out
