"""One writer per data format, shared by the converter (``detcore.data.convert``) and the synthetic
generator (``detcore.data.shapes``): a Pascal VOC devkit (its folders, one xml per image, the
image-set lists), a YOLO set (its folders, label files, ``data.yaml``), a COCO instances json and
a MOTChallenge sequence (``seqinfo.ini``, ``gt/gt.txt``, ``img1/``).

Why one home: both wrote every format, each its own way, and two spellings of one format drift
(a class name escaped in one xml writer and not in the other). The writers take values in the
format's own terms (VOC's integer pixels, YOLO's normalised centre and size, a ready COCO dict);
how a box gets there is the caller's convention, stated where it is chosen.
"""
import json
from xml.sax.saxutils import escape

import numpy as np


def voc_root(out):
    """Create ``out/VOCdevkit/VOC2007`` with its ``Annotations``, ``JPEGImages`` and
    ``ImageSets/Main`` folders (the layout ``detcore.data.layout`` reads); returns VOC2007's."""
    root = out / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def voc_xml(stem, width, height, objects, database=None):
    """The annotation xml of image ``{stem}.jpg``.

    ``objects``: (name, (xmin, ymin, xmax, ymax), difficult, truncated) per box, the box in VOC's
    integer pixels as the caller's convention makes them; ``truncated`` None (not known: a
    converted box) writes neither ``<pose>`` nor ``<truncated>``. ``database`` (a generated set's
    name) writes the ``<source>`` and ``<segmented>0</segmented>`` the devkit's own xmls carry."""
    parts = [f"<annotation>\n  <folder>VOC2007</folder>\n  <filename>{escape(stem)}.jpg</filename>\n"]
    if database is not None:
        parts.append(f"  <source>\n    <database>{escape(database)}</database>\n  </source>\n")
    parts.append(f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n"
                 "    <depth>3</depth>\n  </size>\n")
    if database is not None:
        parts.append("  <segmented>0</segmented>\n")
    for name, (xmin, ymin, xmax, ymax), difficult, truncated in objects:
        pose = ("" if truncated is None
                else f"    <pose>Unspecified</pose>\n    <truncated>{truncated}</truncated>\n")
        parts.append(f"  <object>\n    <name>{escape(name)}</name>\n{pose}    <difficult>{difficult}</difficult>\n"
                     f"    <bndbox>\n      <xmin>{xmin}</xmin>\n      <ymin>{ymin}</ymin>\n"
                     f"      <xmax>{xmax}</xmax>\n      <ymax>{ymax}</ymax>\n    </bndbox>\n  </object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def write_voc_xml(root, stem, width, height, objects, database=None):
    """``voc_xml`` into ``root/Annotations/{stem}.xml``."""
    (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, width, height, objects, database))


def write_image_set(root, name, stems):
    """``root/ImageSets/Main/{name}.txt``: one stem a line."""
    (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))


def yolo_dirs(out, split):
    """Create ``out/images/{split}`` and ``out/labels/{split}`` (Ultralytics' layout: a label
    file is found from its image's path); returns both."""
    img_dir, label_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    return img_dir, label_dir


def yolo_lines(classes, cxcywh):
    """One label line per box: its class index and its centre and size already normalised by
    the image size, 8 decimals (a round trip keeps boxes within 1e-6 of the image size)."""
    return [f"{c} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}\n" for c, (cx, cy, w, h) in zip(classes, cxcywh)]


def write_yolo_labels(path, lines):
    """A label file of ``yolo_lines`` (empty for a background image)."""
    path.write_text("".join(lines))


def write_data_yaml(out, splits, names, comment):
    """``out/data.yaml``: ``images/{split}`` per split and the class ``names``, no ``path`` (so
    detkit and Ultralytics both read it relative to the yaml), under one ``# comment`` line."""
    import yaml

    data = {**{s: f"images/{s}" for s in splits}, "names": list(names)}
    (out / "data.yaml").write_text(f"# {comment}\n" + yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def write_coco_json(path, instances):
    """A COCO instances dict as one line of json at ``path`` (its folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(instances))


def mot_sequence(out, split, name):
    """Create ``out/{split}/{name}/img1`` and ``.../gt`` (a MOT sequence as ``detcore.data.mot``
    reads it); returns the sequence folder."""
    folder = out / split / name
    for sub in ("img1", "gt"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def mot_frame_name(frame, ext=".jpg"):
    """The file name of 1-based ``frame`` in ``img1/``: ``000001.jpg``."""
    return f"{frame:06d}{ext}"


def write_seqinfo(folder, length, width, height, frame_rate=1, ext=".jpg", classes=None):
    """``folder/seqinfo.ini``: MOTChallenge's ``[Sequence]`` keys, and ``[Classes]`` (class
    value = name, one a line) when ``classes`` (pairs) is given: the class names MOT files lack,
    which ``detcore.data.mot`` reads (MOTChallenge's tools read ``[Sequence]`` only)."""
    rate = int(frame_rate) if float(frame_rate).is_integer() else frame_rate
    text = (f"[Sequence]\nname={folder.name}\nimDir=img1\nframeRate={rate}\nseqLength={length}\n"
            f"imWidth={width}\nimHeight={height}\nimExt={ext}\n")
    if classes is not None:
        text += "\n[Classes]\n" + "".join(f"{k}={n}\n" for k, n in classes)
    (folder / "seqinfo.ini").write_text(text)


def _num(v):
    """A pixel value with at most 6 decimals, no trailing zeros (integers stay integers)."""
    return np.format_float_positional(v, precision=6, trim="-")


def mot_gt_lines(frames, track_ids, xywh, consider, classes, visibility):
    """gt.txt lines ``frame,id,x,y,w,h,consider,class,visibility``, one per box (MOT17's order
    of columns; ``consider`` 0 marks an ignore region)."""
    return [f"{int(f)},{int(i)},{_num(x)},{_num(y)},{_num(w)},{_num(h)},{int(c)},{int(k)},{_num(v)}\n"
            for f, i, (x, y, w, h), c, k, v in zip(frames, track_ids, xywh, consider, classes, visibility)]


def mot_result_lines(frames, track_ids, xywh, scores):
    """MOTChallenge result lines ``frame,id,x,y,w,h,score,-1,-1,-1`` (a tracker's output: what
    ``tools/eval_track.py`` and ``demo.py --track --save-txt`` write)."""
    return [f"{int(f)},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.4f},-1,-1,-1\n"
            for f, i, (x, y, w, h), s in zip(frames, track_ids, xywh, scores)]


def write_mot_gt(folder, lines):
    """``folder/gt/gt.txt`` of ``mot_gt_lines`` (empty: a sequence without objects)."""
    (folder / "gt" / "gt.txt").write_text("".join(lines))
