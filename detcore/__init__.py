"""What both detectors share above the device layer (``accel``), by concern:

- ``detcore.data``: every data format read into one in-memory index, writers, conversion, the data
  check, the synthetic generator;
- ``detcore.evaluation``: scoring (COCO, VOC), per-class statistics, report files, plots;
- ``detcore.training``: the services both trainers use (seeding, checkpoints and resume, weight
  loading, results.csv / TensorBoard / wandb, early stopping, logging);
- ``detcore.deploy``: the torch-free runtime and its backends, media I/O and drawing, graph export,
  quantisation.

Small concerns every floor shares have one module each here: ``boxes`` (box conversions),
``files`` (atomic writes, the csv writer, the PNG saver). Image suffixes and folder listing are
``detcore.data.images`` (torch-free: the deploy side lists images through it too).
``moved`` keeps the old import paths of 0.1 working for one release."""
