"""Reading a Pascal VOC devkit folder with the same interface and cleaning policy as COCO.

Layout (as upstream YOLOX's ``VOCDetection``)::

    data_dir/VOC{year}/Annotations/{stem}.xml
    data_dir/VOC{year}/JPEGImages/{stem}.jpg
    data_dir/VOC{year}/ImageSets/Main/{name}.txt     one stem per line

``image_sets`` lists (year, name) pairs, e.g. ``[("2007", "trainval"), ("2012", "trainval")]``.

The xmls are turned into the columns of a COCO instances set and then go through
``detcore.data.index``'s ONE cleaning policy (clip to the image, drop zero-area boxes, skip missing or
empty images with a warning, stop when most are missing) into the same flat arrays. A COCO
instances dict of the same boxes, indexed by ``pycocotools`` (``.coco``, built on first use from
the parsed arrays, which are kept), lets the COCO evaluation path score VOC data too.

Conventions, as upstream YOLOX's ``AnnotationTransform`` (``int(float(text)) - 1`` for each of
xmin, ymin, xmax, ymax): VOC's 1-based pixel coordinates become 0-based ones, so a box from
pixel 1 to pixel 10 is [0, 9]. The COCO dict holds exactly these boxes (``w = xmax - xmin``), so
both evaluation paths and training see one frame. "Difficult" boxes are kept for training
(upstream's ``keep_difficult=True``) and flagged in ``difficult``; in the COCO index they are
crowd annotations (``iscrowd``, as mmdetection's VOC -> COCO converter marks them), which
COCOeval ignores the way the VOC devkit does.

Image ids are the 0-based positions in the listed image sets (upstream's ``pull_item`` returns
that index); class ids are 0..K-1 in ``class_names`` order (upstream's ``class_ids``).
"""
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from accel.errors import UserError
from detcore.boxes import xyxy2xywh
from detcore.data.index import (BoxTable, Columns, IndexedSource, PerImage, coco_from_dict, coco_instances,
                                skip_or_stop)

_COORDS = ("xmin", "ymin", "xmax", "ymax")


def _image_size(path):
    """(width, height) from the image header (PIL reads no pixels); None when there is no file."""
    from PIL import Image

    if not path.is_file():
        return None
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as exc:
        raise UserError(f"image {path} cannot be read for its size ({exc})") from None


def _positive_int(node, tag):
    """``int(float(text))`` of child ``tag`` when present and > 0, else None (size may be 0 or
    absent in hand-made VOC sets; the image header is read instead)."""
    text = node.findtext(tag) if node is not None else None
    try:
        value = int(float(text))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def parse_xml(xml_path):
    """One annotation xml -> (width or None, height or None, names list, boxes [N,4] float64
    0-based xyxy, difficult [N] bool). One-line UserError naming the file for anything malformed."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"annotation file {xml_path} is not valid XML ({exc})") from None
    except OSError as exc:
        raise UserError(f"annotation file {xml_path} cannot be read ({exc.strerror or exc})") from None
    size = root.find("size")
    width, height = _positive_int(size, "width"), _positive_int(size, "height")
    names, coords, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise UserError(f"annotation file {xml_path}: object {k} needs a <name> and a <bndbox>")
        try:
            coords.append([int(float(box.findtext(c))) for c in _COORDS])
            difficult.append(int(obj.findtext("difficult") or 0) == 1)
        except (TypeError, ValueError):
            raise UserError(f"annotation file {xml_path}: object {k} ({name}) needs numeric "
                            "<bndbox> xmin, ymin, xmax, ymax and <difficult>") from None
        names.append(name)
    boxes = np.asarray(coords, dtype=np.float64).reshape(-1, 4) - 1.0   # upstream's 1-based -> 0-based
    return width, height, names, boxes, np.asarray(difficult, dtype=bool)


class VocSource(IndexedSource):
    """Listed images of one or more VOC image sets: the same attributes as ``CocoSource``
    (``coco``, ``class_ids``, ``class_names``, ``ids``, ``table``, ``boxes``, ``unreadable``,
    ``img_dir``, ``ann_file``, ``path()``, ``size()``) plus ``difficult`` aligned with ``boxes``
    (the table's crowd flags), ``parsed``: the xmls as flat arrays (``_arrays``), which the
    COCO index is built from when scoring first asks for it, and ``missing_xmls``: the listed
    images skipped because their annotation xml is missing.

    ``class_names=None`` takes the sorted unique names of the listed xmls (how a model infers its
    label count from the data); given names fix the class order, and an xml naming another class
    is an error naming that xml.
    """

    def __init__(self, data_dir, image_sets, class_names=None):
        self.data_dir = self.img_dir = Path(data_dir)
        if isinstance(image_sets, tuple) and len(image_sets) == 2 and isinstance(image_sets[0], str):
            image_sets = [image_sets]          # one ("2007", "test") pair given bare
        self.image_sets = [(str(year), str(name)) for year, name in image_sets]
        if not self.image_sets:
            raise UserError(f"VOC data {self.data_dir}: no image sets given (e.g. [('2007', 'trainval')])")
        if not self.data_dir.is_dir():
            raise UserError(f"VOC data dir {self.data_dir} not found (expected VOC<year>/Annotations, "
                            "JPEGImages and ImageSets/Main inside it)")
        self.set_files = [self.data_dir / f"VOC{y}" / "ImageSets" / "Main" / f"{n}.txt"
                          for y, n in self.image_sets]
        # what the shared cleaning messages name: the list file, or the devkit for several
        self.ann_file = self.set_files[0] if len(self.set_files) == 1 else self.data_dir
        self.years = tuple(y for y, _ in self.image_sets)
        records = self._parse(self._listed())
        class_names = self._class_names(records, class_names)
        self.parsed = self._arrays(records, class_names)
        del records
        img, ann = self.parsed["images"], self.parsed["annotations"]
        columns = Columns(img["id"], np.stack([img["height"], img["width"]], axis=1), img["file_name"],
                          ann["image_id"], ann["class"],
                          xyxy2xywh(ann["xyxy"]),
                          ann["difficult"])
        table = BoxTable.clean(columns, range(len(class_names)), self.img_dir, self.ann_file, keep_crowd=True)
        self._hold(table, range(len(class_names)), class_names)

    @property
    def difficult(self):
        """Image id -> the difficult flag [N] bool of each box of ``boxes[img_id]``."""
        return PerImage(self.table, lambda r: self.table.at(r)[2])

    # ------------------------------------------------------------------ reading
    def _listed(self):
        """(year, stem) of every line of the image-set files, in order."""
        stems = []
        for (year, _), set_file in zip(self.image_sets, self.set_files):
            try:
                lines = set_file.read_text().split("\n")
            except FileNotFoundError:
                raise UserError(f"image set file {set_file} not found (expected "
                                "VOC<year>/ImageSets/Main/<name>.txt under the VOC data dir)") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"image set file {set_file} cannot be read ({exc})") from None
            # a Main/<class>_<set>.txt line is "stem flag": the stem is the first field
            stems += [(year, ln.split()[0]) for ln in lines if ln.strip()]
        if not stems:
            raise UserError(f"image set file {self.ann_file} lists no images")
        return stems

    def _parse(self, stems):
        """Per listed image: (year, stem, parsed xml or None when the xml is missing)."""
        records, missing = [], []
        for year, stem in stems:
            xml = self.data_dir / f"VOC{year}" / "Annotations" / f"{stem}.xml"
            if xml.is_file():
                records.append((year, stem, parse_xml(xml)))
            else:
                records.append((year, stem, None))
                missing.append(xml)
        self.missing_xmls = missing        # listed images skipped for want of an xml (the data check counts them)
        if missing:
            skip_or_stop(f"{len(missing)} of {len(stems)} images listed in {self.ann_file} have no "
                         f"annotation file (e.g. {missing[0]})", len(missing), len(stems))
        return records

    def _class_names(self, records, class_names):
        found = {n for _, _, rec in records if rec is not None for n in rec[2]}
        if class_names is None:
            if not found:
                raise UserError(f"no objects in the xmls listed in {self.ann_file}: pass class_names "
                                "to fix the classes")
            return tuple(sorted(found))
        class_names = tuple(class_names)
        if len(set(class_names)) != len(class_names) or not class_names:
            raise UserError(f"class_names must be distinct, non-empty names (got {list(class_names)})")
        unknown = found - set(class_names)
        if unknown:
            for year, stem, rec in records:            # name the first xml that uses one
                bad = next((n for n in (rec[2] if rec else ()) if n in unknown), None)
                if bad is not None:
                    xml = self.data_dir / f"VOC{year}" / "Annotations" / f"{stem}.xml"
                    raise UserError(f"annotation file {xml}: class '{bad}' is not one of "
                                    f"class_names {list(class_names)}")
        return class_names

    def _arrays(self, records, class_names):
        """The parsed xmls as flat arrays (images without an xml are left out): ``images``
        (id, height, width, file name) and ``annotations`` (image id, class index, xyxy as
        parsed, difficult), what both the cleaning and the COCO index are built from."""
        index = {n: i for i, n in enumerate(class_names)}
        ids, heights, widths, names, boxes, classes, difficult, owner = [], [], [], [], [], [], [], []
        for img_id, (year, stem, rec) in enumerate(records):
            if rec is None:
                continue
            width, height, objects, xyxy, diff = rec
            rel = f"VOC{year}/JPEGImages/{stem}.jpg"
            if width is None or height is None:
                # no usable <size>: the image header, or 0 x 0 for a missing image (skipped later)
                width, height = _image_size(self.img_dir / rel) or (0, 0)
            ids.append(img_id)
            heights.append(height)
            widths.append(width)
            names.append(rel)
            boxes.append(xyxy)
            classes += [index[n] for n in objects]
            difficult.append(diff)
            owner += [img_id] * len(objects)
        as_int = lambda v: np.asarray(v, dtype=np.int64)   # noqa: E731
        images = {"id": as_int(ids), "height": as_int(heights), "width": as_int(widths),
                  "file_name": np.array(names, dtype=str)}
        annotations = {"image_id": as_int(owner), "class": as_int(classes),
                       "xyxy": np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4)),
                       "difficult": np.concatenate(difficult).astype(bool) if difficult else np.zeros(0, bool)}
        return {"images": images, "annotations": annotations}

    def _index(self):
        """pycocotools index of the COCO instances dict of the parsed xmls: the boxes as parsed
        (``w = xmax - xmin``), difficult ones as crowd annotations."""
        img, ann = self.parsed["images"], self.parsed["annotations"]
        hw = np.stack([img["height"], img["width"]], axis=1)
        instances = coco_instances(img["id"], img["file_name"].tolist(), hw, box_img=ann["image_id"],
                                   box_cat=ann["class"], xyxy=ann["xyxy"], crowd=ann["difficult"],
                                   categories=enumerate(self.class_names))
        return coco_from_dict(instances, self.ann_file)

    @property
    def use_07_metric(self):
        """VOC's 11-point AP for sets before 2010 (upstream: the last listed year < 2010)."""
        try:
            return int(self.years[-1]) < 2010
        except ValueError:
            return False
