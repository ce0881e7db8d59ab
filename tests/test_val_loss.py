"""The validation loss of both detectors: the training loss on the val set, taken from the same
forward that gives the detections (batch norm in eval mode), averaged over the val images."""
import math

import numpy as np
import pytest
import torch

from detcore.training.report import LossMean, loss_pairs


def test_loss_mean_by_hand():
    """Steps weigh 1 (epoch mean), val batches their image count; missing terms are left out."""
    epoch = LossMean(("total_loss", "l1_loss"))
    for v in (3.0, 4.0, 8.0):
        epoch.add({"total_loss": torch.tensor(v), "num_fg": 2.0})
    assert epoch.means() == {"total_loss": 5.0}            # (3 + 4 + 8) / 3; no l1_loss was given
    epoch.reset()
    assert epoch.means() == {}
    val = LossMean(("loss",))
    val.add({"loss": torch.tensor(3.0)}, weight=2)          # a batch of 2 images, mean loss 3
    val.add({"loss": torch.tensor(6.0)}, weight=1)          # the last batch: 1 image, loss 6
    assert val.means(gather=True) == {"loss": 4.0}           # (2*3 + 6) / 3, not (3 + 6) / 2


def test_results_png_pairs_each_training_loss_with_its_validation_twin():
    cols = ["epoch", "total_loss", "iou_loss", "lr", "AP50", "val/total_loss", "val/iou_loss", "val/extra_loss"]
    assert loss_pairs(cols) == [("total_loss", "val/total_loss"), ("iou_loss", "val/iou_loss"),
                                (None, "val/extra_loss")]


# ----------------------------------------------------------------------------------- YOLOX
class FakeDataset:
    """ids in no particular order; load_anno as SourceDataset's (xyxy + class, input pixels)."""
    ids = np.array([30, 10, 20])
    annos = {0: np.zeros((0, 5)),
             1: np.array([[10, 20, 30, 60, 2], [5, 5, 6, 40, 1]], dtype=np.float64),   # 2nd: 1 px wide
             2: np.array([[0, 0, 8, 4, 0], [100, 50, 140, 54, 3]], dtype=np.float64)}

    def load_anno(self, index):
        return self.annos[index].copy()


def test_yolox_val_targets_by_hand():
    from yolox.evaluators.coco_evaluator import loss_targets

    ds = FakeDataset()
    order = np.argsort(ds.ids)
    positions = (order, ds.ids[order])
    out = loss_targets(ds, torch.tensor([[10], [30]]), positions)
    # (class, cx, cy, w, h): the 1 px wide box is dropped as TrainTransform drops it
    assert out.dtype == torch.float32 and out.tolist() == [[[2, 20, 40, 20, 40]], [[0, 0, 0, 0, 0]]]
    out = loss_targets(ds, torch.tensor([[30], [20], [10]]), positions)
    assert out.tolist() == [[[0] * 5, [0] * 5],
                            [[0, 4, 2, 8, 4], [3, 120, 52, 40, 4]],
                            [[2, 20, 40, 20, 40], [0] * 5]]


def nano(num_classes=4):
    from yolox.exp import get_exp

    torch.manual_seed(0)
    exp = get_exp(exp_name="yolox-nano")
    exp.num_classes = num_classes
    return exp, exp.get_model()


def test_yolox_head_gives_detections_and_training_loss_of_one_forward():
    """Eval mode with targets: the detections of a call without targets, bit for bit, and the
    loss a training forward computes with the same (eval-mode) batch-norm statistics."""
    _, model = nano()
    model.head.use_l1 = True
    x = torch.rand(2, 3, 96, 96) * 255
    labels = torch.zeros(2, 3, 5)
    labels[0, 0] = torch.tensor([1, 30, 40, 20, 30])
    labels[0, 1] = torch.tensor([3, 70, 60, 24, 50])
    labels[1, 0] = torch.tensor([0, 48, 48, 60, 60])
    model.eval()
    with torch.no_grad():
        plain = model(x)
        preds, losses = model(x, labels)
        assert torch.equal(preds, plain)
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()                      # training forward, running statistics
        reference = model(x, labels)
    assert set(losses) == set(reference)
    for k in reference:
        torch.testing.assert_close(losses[k], reference[k], rtol=1e-6, atol=1e-6, msg=k)
    assert losses["l1_loss"] > 0 and math.isfinite(float(losses["total_loss"]))


def test_yolox_evaluator_val_loss_comes_from_the_detection_forward(shapes_coco):
    """One backbone pass per val batch; the val loss is the image-weighted mean of the batches'
    training losses (batches of 5, 5, 2 images: an unweighted batch mean would differ)."""
    from yolox.evaluators.coco_evaluator import VAL_LOSS_KEYS, loss_targets

    exp, model = nano()
    exp.data_dir, exp.test_size, exp.data_num_workers = str(shapes_coco), (96, 96), 0
    evaluator = exp.get_evaluator(batch_size=5, is_distributed=False)
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    ap50_95, ap50, summary = exp.eval(model, evaluator, False)
    assert len(calls) == 3 == len(evaluator.dataloader)
    val = evaluator.val_loss()
    assert set(val) == set(VAL_LOSS_KEYS) and all(math.isfinite(v) for v in val.values())
    assert evaluator.last_result.val_loss == val and evaluator.last_result.ap50_95 == ap50_95
    assert summary.startswith(f"validation loss (the training loss on the val set): total_loss {val['total_loss']:.4f}")
    # independently: each batch through a training-mode forward with eval-mode batch norm
    ds = evaluator.dataloader.dataset
    ids_sorted = np.sort(np.asarray(ds.ids))
    positions = (np.argsort(np.asarray(ds.ids)), ids_sorted)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    weighted, n = 0.0, 0
    with torch.no_grad():
        for imgs, _, _, ids in evaluator.dataloader:
            loss = model(imgs, loss_targets(ds, ids, positions))["total_loss"]
            weighted, n = weighted + float(loss) * len(imgs), n + len(imgs)
    assert n == 12
    assert val["total_loss"] == pytest.approx(weighted / n, rel=1e-5)


# ----------------------------------------------------------------------------------- SSD
def test_ssd_loss_terms_by_hand():
    """Predictions on the exact offsets: no localisation loss; all-zero logits over 5 labels:
    CE = ln 5 on each positive and on 3 mined negatives per positive -> conf = 4 ln 5 per image."""
    from ssd import Loss, dboxes300_coco

    dboxes = dboxes300_coco()
    loss = Loss(dboxes)
    anchors = dboxes(order="xywh")                    # [8732, 4]
    glabel = torch.zeros(2, 8732, dtype=torch.long)
    glabel[0, [5, 100, 4000]] = torch.tensor([1, 2, 4])
    glabel[1, 7000] = 3
    gloc = anchors.t().unsqueeze(0).repeat(2, 1, 1)    # targets = the anchors: offsets 0
    ploc, plabel = torch.zeros(2, 4, 8732), torch.zeros(2, 5, 8732)
    terms = loss.terms(ploc, plabel, gloc, glabel)
    assert float(terms["loc_loss"]) == 0.0
    assert float(terms["conf_loss"]) == pytest.approx(4 * math.log(5), rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(float(loss(ploc, plabel, gloc, glabel)), rel=1e-6)


@pytest.fixture(scope="module")
def ssd_val3(tmp_path_factory):
    from conftest import load_make_shapes

    return load_make_shapes()(tmp_path_factory.mktemp("ssd_val3"), num_train=1, num_val=3, seed=2)


def test_ssd_evaluate_val_loss_is_the_training_loss_of_the_val_images(ssd_val3):
    from torch.utils.data import DataLoader

    from ssd import SSD300, Encoder, Loss, dboxes300_coco
    from ssd.data import CocoDetection, coco_paths, collate
    from ssd.evaluation import evaluate

    _, _, val_dir, val_ann = coco_paths(ssd_val3)
    ds = CocoDetection(val_dir, val_ann, train=False)
    loader = DataLoader(ds, batch_size=2, collate_fn=collate)       # batches of 2 and 1 images
    torch.manual_seed(0)
    model, encoder, loss_fn = SSD300(label_num=ds.num_classes), Encoder(dboxes300_coco()), Loss(dboxes300_coco())
    result = evaluate(model, loader, encoder, ds, torch.device("cpu"), loss_fn=loss_fn)
    val = result.val_loss
    assert set(val) == {"loss", "loc_loss", "conf_loss"}
    assert val["loss"] == pytest.approx(val["loc_loss"] + val["conf_loss"], rel=1e-6)
    model.eval()
    weighted = 0.0
    with torch.no_grad():
        for imgs, boxes, labels, _, _ in loader:
            gloc, glabel = encoder.encode_batch(boxes, labels)
            ploc, plabel = model(imgs)
            weighted += float(loss_fn(ploc, plabel, gloc.transpose(1, 2), glabel)) * len(imgs)
    assert val["loss"] == pytest.approx(weighted / 3, rel=1e-5)
    assert not hasattr(evaluate(model, loader, encoder, ds, torch.device("cpu")), "val_loss")
