"""Pre-train a ResNet-34 backbone for SSD on the generated shapes set (no download needed).

The MLPerf recipe starts SSD from an ImageNet ResNet-34; nothing can be downloaded here, and a
from-scratch backbone does not learn in a CPU budget (its first gradients are ~100x those of a
trained one). This script gives the same kind of start on the project's own data: it classifies
crops around the training boxes (the K shape classes plus background crops) with ResNet-34
truncated where SSD truncates it (after conv4_x, ``layer3``, global-pooled into the classifier), so
the features SSD reads are the ones trained to tell the shapes apart, and no time goes into a
``layer4`` SSD would drop. It writes the torchvision-format ``resnet34`` keys SSD loads
(``conv1``, ``bn1``, ``layer1..3``) for ``ssd/train.py --pretrained-backbone``.

    python tools/pretrain_backbone.py --data datasets/shapes --out datasets/shapes_resnet34.pth
"""
import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

from detcore.training.checkpoints import save_atomic  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402
from detcore.data.coco import CocoSource  # noqa: E402
from ssd.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


def crops_of(source, size, variants, rng):
    """uint8 crops [N, size, size, 3] and labels [N]: each box with ``variants`` random contexts
    (1.3-2.5x its size, shifted; outside the image is black), and about half as many background
    windows that overlap no box by more than 10%."""
    images, labels, k = [], [], len(source.class_ids)
    for img_id in source.ids:
        boxes, cls = source.boxes[img_id]
        try:
            with Image.open(source.path(img_id)) as im:
                img = im.convert("RGB")
        except OSError:
            continue
        w, h = img.size
        for box, c in zip(boxes, cls):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            side = max(box[2] - box[0], box[3] - box[1])
            for _ in range(variants):
                s = side * rng.uniform(1.3, 2.5)
                x, y = cx + rng.uniform(-0.2, 0.2) * side, cy + rng.uniform(-0.2, 0.2) * side
                window = (x - s / 2, y - s / 2, x + s / 2, y + s / 2)
                images.append(np.asarray(img.crop(window).resize((size, size), Image.BILINEAR)))
                labels.append(int(c))
        for _ in range(max(len(boxes), 1) * variants // 2 + 1):
            s = rng.uniform(0.1, 0.5) * min(w, h)
            x, y = rng.uniform(0, w - s), rng.uniform(0, h - s)
            inter = [max(0, min(x + s, b[2]) - max(x, b[0])) * max(0, min(y + s, b[3]) - max(y, b[1]))
                     for b in boxes]
            if all(a < 0.1 * s * s for a in inter):
                images.append(np.asarray(img.crop((x, y, x + s, y + s)).resize((size, size), Image.BILINEAR)))
                labels.append(k)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def normalise(batch_uint8):
    x = batch_uint8.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="COCO-layout folder (train2017/, val2017/, annotations/)")
    p.add_argument("--out", required=True, help="output .pth (torchvision resnet34 state dict)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    p.add_argument("--size", type=int, default=48, help="crop side in pixels")
    p.add_argument("--variants", type=int, default=3, help="random contexts per box")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.size < 32 or args.batch_size < 2:
        raise UserError("--minutes must be > 0, --size >= 32 and --batch-size >= 2")
    root = Path(args.data)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    train = CocoSource(root / "annotations" / "instances_train2017.json", root / "train2017")
    val = CocoSource(root / "annotations" / "instances_val2017.json", root / "val2017")
    x_train, y_train = crops_of(train, args.size, args.variants, rng)
    x_val, y_val = crops_of(val, args.size, 1, rng)
    classes = len(train.class_ids) + 1
    print(f"{len(x_train)} train / {len(x_val)} val crops, {classes} classes (last = background)")
    model = torchvision.models.resnet34(weights=None)
    model.layer4 = torch.nn.Identity()              # SSD stops after layer3 (256 channels)
    model.fc = torch.nn.Linear(256, classes)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    budget, start, step = args.minutes * 60, time.time(), 0
    model.train()
    while time.time() - start < budget:
        order = torch.randperm(len(x_train))
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            frac = min((time.time() - start) / budget, 1.0)
            for g in opt.param_groups:                      # short warm-up, then cosine to 0
                g["lr"] = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * frac))
            idx = order[i:i + args.batch_size]
            x = normalise(x_train[idx])
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
            if time.time() - start >= budget:
                break
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(normalise(x_val[i:i + 256])).argmax(1) for i in range(0, len(x_val), 256)])
    print(f"val crop accuracy {(pred == y_val).float().mean().item():.3f} after {step} steps "
          f"({time.time() - start:.0f} s)")
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    save_atomic(backbone, args.out)
    print(f"wrote {args.out} (use: ssd/train.py --pretrained-backbone {args.out})")


if __name__ == "__main__":
    main()
