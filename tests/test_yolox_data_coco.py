"""COCODataset on generated data: letterbox labels, class mapping, cleaning, bad input, caching."""
import json

import cv2
import numpy as np
import pytest

from accel.errors import UserError
from yolox.data import COCODataset, TrainTransform, ValTransform


def write_set(root, images, annotations, categories=({"id": 1, "name": "a"},), name="train2017"):
    """Tiny COCO set: ``images`` are (file_name, h, w) drawn as grey jpgs; returns the data dir."""
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for file_name, h, w in images:
        cv2.imwrite(str(root / name / file_name), np.full((h, w, 3), 90, np.uint8))
    data = {"images": [{"id": i + 1, "file_name": f, "height": h, "width": w} for i, (f, h, w) in enumerate(images)],
            "annotations": [{"id": k + 1, "iscrowd": 0, "area": 1.0, **a} for k, a in enumerate(annotations)],
            "categories": list(categories)}
    (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(data))
    return root


def test_shapes_labels_are_json_boxes_scaled_by_letterbox_ratio(shapes_coco):
    ds = COCODataset(shapes_coco, img_size=(416, 416))
    data = json.loads((shapes_coco / "annotations" / "instances_train2017.json").read_text())
    assert len(ds) == 24 and ds.class_ids == [1, 2, 3, 4]
    assert ds._classes == ("circle", "rectangle", "triangle", "star")
    for index in (0, 5, 23):
        img, labels, (h, w), img_id = ds.pull_item(index)
        info = ds.coco.imgs[int(img_id[0])]
        r = min(416 / h, 416 / w)
        assert (h, w) == (info["height"], info["width"]) and img.shape == (int(h * r), int(w * r), 3)
        anns = [a for a in data["annotations"] if a["image_id"] == img_id[0]]
        expected = np.array([[x * r, y * r, (x + bw) * r, (y + bh) * r, a["category_id"] - 1]
                             for a in anns for x, y, bw, bh in [a["bbox"]]]).reshape(-1, 5)
        np.testing.assert_allclose(labels, expected, rtol=1e-9)


def test_getitem_with_transforms(shapes_coco):
    ds = COCODataset(shapes_coco, json_file="instances_val2017.json", name="val2017", img_size=(320, 256),
                     preproc=ValTransform())
    img, target, info, img_id = ds[(True, 3)]                # sampler-style key works too
    assert img.shape == (3, 320, 256) and target.shape == (1, 5) and img_id.shape == (1,)
    ds.preproc = TrainTransform(max_labels=20, flip_prob=0.0, hsv_prob=0.0)
    _, target, _, _ = ds[3]
    labels = ds.load_anno(3)
    assert target.shape == (20, 5) and np.count_nonzero(target.any(axis=1)) == len(labels)


def test_class_ids_map_from_sorted_category_ids(tmp_path):
    cats = [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}, {"id": 42, "name": "c"}]
    anns = [{"image_id": 1, "category_id": c, "bbox": [1, 1, 10, 10]} for c in (42, 3, 7)]
    ds = COCODataset(write_set(tmp_path, [("x.jpg", 40, 40)], anns, cats), img_size=(40, 40))
    assert ds.class_ids == [3, 7, 42] and ds._classes == ("a", "b", "c")
    np.testing.assert_array_equal(ds.pull_item(0)[1][:, 4], [2, 0, 1])


def test_boxes_clipped_degenerate_dropped_negatives_kept(tmp_path, log_lines):
    anns = [{"image_id": 1, "category_id": 1, "bbox": b} for b in
            ([-10, -5, 60, 45], [90, 70, 30, 30], [5, 5, 0, 10], [5, 5, 10, -3], [200, 10, 5, 5], [10, 10, 20, 20])]
    ds = COCODataset(write_set(tmp_path, [("a.jpg", 80, 100), ("empty.jpg", 50, 50)], anns), img_size=(80, 100))
    labels = ds.pull_item(0)[1]
    np.testing.assert_allclose(labels, [[0, 0, 50, 40, 0], [90, 70, 100, 80, 0], [10, 10, 30, 30, 0]])
    assert len(ds) == 2 and ds.pull_item(1)[1].shape == (0, 5)
    # one line: the clip-first policy drops the zero-size and the outside boxes alike
    counted = [ln for ln in log_lines if "clipped 2 boxes" in ln]
    assert len(counted) == 1 and "dropped 3 with zero area after clipping (of 6)" in counted[0]


def expect_user_error(match, *args, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        COCODataset(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_input_errors_name_the_file(tmp_path):
    expect_user_error(f"data dir {tmp_path / 'nope'} not found", tmp_path / "nope")
    root = write_set(tmp_path / "ok", [("a.jpg", 20, 20)], [])
    expect_user_error("annotation file .*instances_val2017.json not found", root, json_file="instances_val2017.json")
    ann = root / "annotations" / "instances_train2017.json"
    ann.write_text('{"images": [1, 2,')
    expect_user_error("instances_train2017.json is not valid JSON", root)
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}))
    expect_user_error("instances_train2017.json has no images", root)
    ann.write_text(json.dumps([1, 2]))
    expect_user_error("is not COCO instances json", root)
    good = {"images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 20}], "categories": [{"id": 1}]}
    bad_cat = {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 2, 2]}
    ann.write_text(json.dumps({**good, "annotations": [bad_cat]}))
    expect_user_error("category_id 5 is not in its categories", root)
    ann.write_text(json.dumps({**good, "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2]}]}))
    expect_user_error("every bbox must be 4 numbers", root)
    two = [{"id": k, "image_id": 1, "category_id": 1, "bbox": [0, 0]} for k in (1, 2)]   # 4 numbers in all
    ann.write_text(json.dumps({**good, "annotations": two}))
    expect_user_error("every bbox must be 4 numbers", root)
    ann.write_text(json.dumps({**good, "images": [{"id": 1, "file_name": "a.jpg", "height": 0, "width": 20}]}))
    expect_user_error("image 1 needs a positive width and height", root)
    ann.write_text(json.dumps({**good, "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 2, 2]}]}))
    expect_user_error(r"annotations\[0\] lacks one of id, image_id, category_id, bbox", root)
    ann.write_text(json.dumps(good))
    expect_user_error("image folder .*val2017 not found", root, name="val2017")


def test_missing_and_unreadable_images(tmp_path, log_lines):
    files = [(f"{i}.jpg", 30, 40) for i in range(5)]
    anns = [{"image_id": i + 1, "category_id": 1, "bbox": [i, i, 10, 10]} for i in range(5)]
    root = write_set(tmp_path, files, anns)
    (root / "train2017" / "4.jpg").unlink()
    (root / "train2017" / "1.jpg").write_bytes(b"not a jpeg")
    ds = COCODataset(root, img_size=(30, 40))
    assert len(ds) == 4 and any("skipping 1 of 5 images" in ln and "4.jpg" in ln for ln in log_lines)
    img, labels, _, img_id = ds.pull_item(1)                     # 1.jpg is corrupt -> next image (2.jpg)
    assert img_id[0] == 3 and labels[0, 0] == 2 and ds.unreadable == {1}
    assert any("skipping unreadable image" in ln and "1.jpg" in ln for ln in log_lines)
    cached = COCODataset(root, img_size=(30, 40), cache=True)
    assert cached.unreadable == {1}
    np.testing.assert_array_equal(cached.pull_item(2)[0], ds.pull_item(2)[0])
    for name in ("0.jpg", "2.jpg"):
        (root / "train2017" / name).write_bytes(b"junk")
    with pytest.raises(UserError, match="most images under .*train2017 cannot be decoded"):
        COCODataset(root, img_size=(30, 40), cache=True)
    for name in ("0.jpg", "2.jpg", "3.jpg"):
        (root / "train2017" / name).unlink()
    expect_user_error("4 of 5 images listed in .*instances_train2017.json are missing or empty", root)


def test_worker_loader_on_shapes_and_close_mosaic_reaches_workers(shapes_coco):
    from yolox.data import DataLoader, InfiniteSampler, MosaicDetection, YoloBatchSampler, worker_init_reset_seed

    base = COCODataset(shapes_coco, img_size=(128, 160), cache=True)
    ds = MosaicDetection(base, (128, 160), preproc=TrainTransform(max_labels=30), mosaic_scale=(0.5, 1.5))
    sampler = YoloBatchSampler(InfiniteSampler(len(ds), seed=0), batch_size=4, drop_last=False)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, persistent_workers=True,
                        worker_init_fn=worker_init_reset_seed)
    batches = iter(loader)
    imgs, targets, (h, w), ids = next(batches)
    assert imgs.shape == (4, 3, 128, 160) and targets.shape == (4, 30, 5)
    assert (h == 128).all() and (w == 160).all()
    loader.close_mosaic()
    for _ in range(5):                                        # up to 2 x 2 batches were already in flight
        _, _, (h, w), ids = next(batches)
    imgs = ds._dataset.coco.imgs
    originals = [(imgs[int(i)]["height"], imgs[int(i)]["width"]) for i in ids.reshape(-1)]
    assert list(zip(h.tolist(), w.tolist())) == originals
    del batches, loader
