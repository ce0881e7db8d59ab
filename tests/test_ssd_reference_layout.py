"""The MLPerf reference's data layout that ``--dl-worker-type HABANA`` hands to the vendor loader
(``ssd/reference_utils.py``): the same samples and targets as the project's own path, and a
training step that does not encode targets twice. The vendor loader's checks are pinned in
``tests/test_accel_hpu_seam.py``."""
import torch
from torch.utils.data import default_collate

from accel import Precision
from ssd import Encoder, dboxes300_coco
from ssd.data import CocoDetection, EncodedTargets, collate, collate_encoded
from ssd.step import TrainStep
from ssd.reference_utils import MAX_VAL_BOXES, ReferenceBatches, ReferenceLayout


def split(root, name, train):
    return CocoDetection(root / name, root / "annotations" / f"instances_{name}.json", train=train, seed=3)


def test_reference_batches_equal_the_project_batches_encoded(shapes_coco):
    """Torch's loader over the layout (the vendor loader's fallback) trains on exactly what the
    project's collate + batched encoder would give for the same samples."""
    ds = split(shapes_coco, "train2017", train=True)
    ds.epoch = 1
    mine = collate([ds[i] for i in (0, 5)])
    gloc, glabel = Encoder(dboxes300_coco()).encode_batch(mine[1], mine[2])
    layout = ReferenceLayout(ds)
    (imgs, boxes, labels, ids, sizes), = ReferenceBatches([default_collate([layout[i] for i in (0, 5)])])
    assert torch.equal(imgs, mine[0]) and torch.equal(ids, mine[3]) and torch.equal(sizes, mine[4])
    assert torch.allclose(boxes, gloc) and torch.equal(labels, glabel)


def test_encode_in_workers_batches_equal_the_batched_encoding(shapes_coco):
    """``--encode-in workers`` (per image, where the sample is read) gives the targets the default
    batched encoding gives the padded batch of the same samples."""
    ds = split(shapes_coco, "train2017", train=True)
    ds.epoch = 2
    encoder = Encoder(dboxes300_coco())
    mine = collate([ds[i] for i in (1, 4, 6)])
    gloc, glabel = encoder.encode_batch(mine[1], mine[2])
    workers = EncodedTargets(ds, encoder)
    imgs, boxes, labels, ids, sizes = collate_encoded([workers[i] for i in (1, 4, 6)])
    assert len(workers) == len(ds) and boxes.shape == (3, 8732, 4) and labels.shape == (3, 8732)
    assert torch.equal(imgs, mine[0]) and torch.equal(ids, mine[3]) and torch.equal(sizes, mine[4])
    assert torch.allclose(boxes, gloc) and torch.equal(labels, glabel) and (labels > 0).any()


def test_reference_layout_lists_the_served_images_with_pixel_boxes(shapes_coco):
    ds = split(shapes_coco, "val2017", train=False)
    layout = ReferenceLayout(ds)
    assert list(layout.images) == ds.ids and len(layout) == len(ds)
    img_id = next(i for i in ds.ids if len(ds.targets[i][1]))
    name, (h, w), anns = layout.images[img_id]
    assert (shapes_coco / "val2017" / name).is_file() and (h, w) == ds.source.size(img_id)
    ltrb, labels = ds.targets[img_id]
    assert [lab for _, lab in anns] == labels.tolist()
    x, y, bw, bh = anns[0][0]
    assert torch.allclose(torch.tensor([x / w, y / h, (x + bw) / w, (y + bh) / h]), torch.from_numpy(ltrb[0]))
    assert layout.transform.val and layout.label_info == ds.label_info
    _, got_id, size, boxes, labels_out = layout[ds.ids.index(img_id)]
    assert got_id == img_id and size == (h, w) and boxes.shape == (MAX_VAL_BOXES, 4)
    assert labels_out[:len(labels)].tolist() == labels.tolist() and not labels_out[len(labels):].any()


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * torch.ones(len(x), 4, 8732), self.w * torch.ones(len(x), 3, 8732)


class Recorder:
    def __init__(self):
        self.calls = []

    def encode_batch(self, boxes, labels):
        self.calls.append("encode_batch")
        return torch.zeros(len(boxes), 8732, 4), torch.zeros(len(boxes), 8732, dtype=torch.long)

    def loss(self, ploc, plabel, gloc, glabel):
        self.calls.append((gloc.clone(), glabel.clone()))
        return (ploc * gloc).mean()


def test_train_step_encodes_only_targets_not_yet_encoded():
    rec, head = Recorder(), Head()
    step = TrainStep(head, rec.loss, rec, torch.optim.SGD(head.parameters(), lr=0.1), Precision("cpu"),
                     torch.device("cpu"), 1)
    gloc, glabel = torch.rand(2, 8732, 4), torch.randint(0, 3, (2, 8732))
    step(torch.zeros(2, 3, 8, 8), gloc, glabel, 0.1, encoded=True)
    (seen_loc, seen_label), = rec.calls
    assert torch.equal(seen_loc, gloc.transpose(1, 2)) and torch.equal(seen_label, glabel)
    rec.calls.clear()
    step(torch.zeros(2, 3, 8, 8), torch.rand(2, 5, 4), torch.ones(2, 5, dtype=torch.long), 0.1)
    assert rec.calls[0] == "encode_batch"
