"""Pascal VOC AP evaluation of YOLOX (upstream's ``VOCEvaluator``; scoring: ``detcore.evaluation.voc_eval``).

Inference is ``COCOEvaluator``'s (same loader, model call, NMS device and letterbox undo); only
the rows' layout and the scoring differ. Returns what upstream HEAD returns, which the trainer
reads as COCOEvaluator's: (mAP over IoU 0.50:0.95, mAP at IoU 0.50, summary), the summary being
upstream's VOC table. The metric (11-point for sets before 2010) follows the evaluated years.
The per-class table of ``detcore.evaluation.class_stats`` (P/R, COCO-style AP) is printed after it, from the
same rows scored through the set's COCO index; ``last_result`` keeps that ``CocoScore``.
"""
from detcore.evaluation.coco_eval import gather_and_score as coco_gather_and_score
from detcore.evaluation.voc_eval import gather_and_score, rows_from_coco
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
        coco_rows, infer_s, n_img = self.predict(model, half)
        dataset = self.dataloader.dataset
        rows = rows_from_coco(coco_rows, dataset.class_ids)
        result = gather_and_score(dataset.source, rows, infer_s, n_img)
        # the per-class table, curves and confusion matrix: the COCO path over the set's
        # in-memory COCO index (difficult boxes ignored there), as for every other format
        self.last_result = coco_gather_and_score(lambda: dataset.source.coco, coco_rows, dataset.ids,
                                                 keep_rows=self.keep_rows)
        self.last_result.val_loss = self.val_loss(distributed)
        classes = self.last_result.classes
        if classes is not None:
            result.summary += "COCO-style " + classes.table() + "\n"
        model.train(was_training)
        out = (result.ap50_95, result.ap50, result.summary)
        return (out, rows) if return_outputs else out
