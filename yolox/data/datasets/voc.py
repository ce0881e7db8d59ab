"""Pascal VOC detection dataset for YOLOX (upstream's ``VOCDetection`` name and arguments).

Reading, the box convention (upstream's 1-based -> 0-based ``- 1``), difficult flags and the
cleaning policy live in ``detcore.data.voc.VocSource``; letterboxing, caching and ``pull_item`` are
``SourceDataset``'s, shared with ``COCODataset``, so MosaicDetection, the trainer and both
evaluators use a VOC set exactly as a COCO one.
"""
from accel.errors import UserError
from detcore.data.voc import VocSource
from yolox.data.datasets.coco import SourceDataset
from yolox.data.datasets.voc_classes import VOC_CLASSES


class VOCDetection(SourceDataset):
    """VOCdevkit folder ``data_dir`` (holding VOC2007/, VOC2012/, ...) read for ``image_sets``.

    ``class_names`` fixes the class order (default: the 20 ``VOC_CLASSES``); ``None`` takes the
    sorted names found in the listed xmls. ``difficult`` boxes are trained on, as upstream
    (``keep_difficult=True``); ``VOCEvaluator`` ignores them, as the devkit does.
    ``dataset_name`` and ``cache_type`` are upstream's arguments: ``cache=True`` caches as
    ``cache_type`` ('ram' or 'disk'); ``cache='ram'|'disk'`` (what ``--cache`` passes) names it.
    """

    def __init__(self, data_dir, image_sets=(("2007", "trainval"), ("2012", "trainval")),
                 img_size=(416, 416), preproc=None, cache=False, class_names=VOC_CLASSES,
                 dataset_name="VOC0712", cache_type="ram", cache_dir=None):
        if cache is True:
            if cache_type not in ("ram", "disk"):
                raise UserError(f"VOCDetection: cache_type {cache_type!r}: expected 'ram' or 'disk'")
            cache = cache_type
        self.data_dir, self.image_set, self.name = data_dir, list(image_sets), dataset_name
        super().__init__(VocSource(data_dir, image_sets, class_names), img_size, preproc, cache, cache_dir)

    @property
    def difficult(self):
        """Per image id: the difficult flag of each box of ``source.boxes[img_id]``."""
        return self.source.difficult
