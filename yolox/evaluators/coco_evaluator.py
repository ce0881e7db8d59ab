"""COCO mAP evaluation (accel.coco_eval), single-process or sharded across ranks."""
import time

import numpy as np
import torch
from tabulate import tabulate

from accel import all_gather_object, broadcast_object, is_main_process, mark_step
from accel.coco_eval import evaluate_bbox, format_summary


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
    rows = torch.cat(rows)
    # an early, diverging model can decode inf/nan boxes; pycocotools must not see them
    return rows[torch.isfinite(rows).all(dim=1)].numpy()


def per_class_ap_table(coco_eval, coco_gt, columns=6):
    """AP (IoU .50:.95, all areas, maxDets 100) per category as a tabulate grid."""
    precision = coco_eval.eval["precision"]          # [T, R, K, A, M]
    cells = []
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        ap = float(np.mean(p)) * 100 if p.size else float("nan")
        cells += [coco_gt.cats[int(cat_id)]["name"], f"{ap:.3f}"]
    width = columns
    rows = [cells[i:i + width] for i in range(0, len(cells), width)]
    headers = ["class", "AP"] * (width // 2)
    return tabulate(rows, headers=headers, tablefmt="pipe", numalign="left")


def coco_summary(coco_gt, rows, img_ids):
    """Score detection rows; returns (ap50_95, ap50, summary text with per-class table)."""
    if rows.shape[0] == 0:
        return 0.0, 0.0, "no detections: AP and AR are 0\n"
    coco_eval = evaluate_bbox(coco_gt, rows, img_ids)
    summary = (format_summary(coco_eval.stats) + "per class AP:\n"
               + per_class_ap_table(coco_eval, coco_gt) + "\n")
    return float(coco_eval.stats[0]), float(coco_eval.stats[1]), summary


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
        from yolox.evaluators.progress import Progress
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
            dets = postprocess(out, self.num_classes, self.confthre, self.nmsthre)
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
        if distributed:
            gathered = all_gather_object((rows, infer_s, n_img))
            rows = np.concatenate([g[0] for g in gathered])
            infer_s = max(g[1] for g in gathered)
            n_img = sum(g[2] for g in gathered)
        result = None
        if is_main_process():
            dataset = self.dataloader.dataset
            ap50_95, ap50, summary = coco_summary(dataset.coco, rows, dataset.ids)
            ms = 1000.0 * infer_s / max(n_img, 1)
            summary = f"Average forward + NMS time: {ms:.2f} ms per image ({n_img} images)\n" + summary
            result = (ap50_95, ap50, summary)
        if distributed:
            result = broadcast_object(result, src=0)
        model.train(was_training)
        return (result, rows) if return_outputs else result
