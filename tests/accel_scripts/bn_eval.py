"""Scores a model whose detections move with its batch-norm running mean, on 1 or N ranks.

Usage: ``bn_eval.py COCO_ROOT MEAN_PER_RANK...`` (run plainly, or under torchrun). Rank r sets
the running mean to ``MEAN_PER_RANK[r]`` and evaluates its shard with ``ssd.evaluation.evaluate``;
rank 0 prints ``AP <mAP>``. Shared by tests/test_bn_sync_eval.py for both sides of the check.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import accel  # noqa: E402
from ssd.data import CocoDetection, collate  # noqa: E402
from ssd.evaluation import evaluate  # noqa: E402


class ShiftByRunningMean(torch.nn.Module):
    """Eval-mode output: every box moved right by (0 - running_mean) / sqrt(var + eps)."""

    def __init__(self, mean):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(1)
        self.bn.running_mean.fill_(mean)

    def forward(self, images):
        shift = self.bn(images.new_zeros(len(images), 1))
        return shift.view(-1, 1, 1).expand(-1, 4, 1), images.new_zeros(len(images), 2, 1)


class GroundTruthShifted:
    """decode_batch stand-in: the ground truth of the images in loader order, shifted in x."""

    def __init__(self, dataset, order):
        self.dataset, self.queue = dataset, list(order)

    def decode_batch(self, ploc, plabel, criteria, max_output, nms_valid_thresh):
        out = []
        for shift in ploc[:, 0, 0].tolist():
            boxes, labels = self.dataset.targets[self.dataset.ids[self.queue.pop(0)]]
            moved = torch.from_numpy(boxes.copy())
            moved[:, 0::2] += shift
            out.append((moved, torch.from_numpy(labels), torch.ones(len(labels))))
        return out


def main(root, means):
    info = accel.init_distributed(torch.device("cpu"), timeout_s=60)
    root = Path(root)
    val = CocoDetection(root / "val2017", root / "annotations" / "instances_val2017.json", train=False)
    shard = list(range(info.rank, len(val), info.world_size))
    loader = DataLoader(val, batch_size=4, sampler=shard, collate_fn=collate)
    model = ShiftByRunningMean(float(means[info.rank]))
    result = evaluate(model, loader, GroundTruthShifted(val, shard), val, torch.device("cpu"))
    if accel.is_main_process():
        print(f"AP {result.ap50_95:.10f} mean_after {model.bn.running_mean.item():.6f}", flush=True)
    accel.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
