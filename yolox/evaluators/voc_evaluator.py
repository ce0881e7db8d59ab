"""Pascal VOC AP evaluation of YOLOX (upstream's ``VOCEvaluator``; scoring: ``detcore.voc_eval``).

Inference is ``COCOEvaluator``'s (same loader, model call, NMS device and letterbox undo); only
the rows' layout and the scoring differ. Returns what upstream HEAD returns, which the trainer
reads as COCOEvaluator's: (mAP over IoU 0.50:0.95, mAP at IoU 0.50, summary), the summary being
upstream's VOC table. The metric (11-point for sets before 2010) follows the evaluated years.
"""
from detcore.voc_eval import gather_and_score, rows_from_coco
from yolox.evaluators.coco_evaluator import COCOEvaluator


class VOCEvaluator(COCOEvaluator):
    """Runs a model over a ``VOCDetection`` loader and scores it with the VOC AP definition
    (over a ``COCODataset`` loader too: no box is difficult there, and the area metric applies)."""

    def __init__(self, dataloader, img_size, confthre, nmsthre, num_classes):
        super().__init__(dataloader, img_size, confthre, nmsthre, num_classes)

    def evaluate(self, model, distributed=False, half=False, return_outputs=False):
        """(ap50_95, ap50, VOC table) on every rank; with ``return_outputs`` also this rank's
        detection rows (image_id, x1, y1, x2, y2, score, class index)."""
        was_training = model.training
        rows, infer_s, n_img = self.predict(model, half)
        dataset = self.dataloader.dataset
        rows = rows_from_coco(rows, dataset.class_ids)
        result = gather_and_score(dataset.source, rows, infer_s, n_img)
        model.train(was_training)
        out = (result.ap50_95, result.ap50, result.summary)
        return (out, rows) if return_outputs else out
