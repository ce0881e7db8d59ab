"""Data: every format becomes the same in-memory index, through one cleaning policy.

``index`` (the flat-array ``BoxTable`` and its cleaning, the ``IndexedSource`` interface every
reader implements, the skip-or-stop policy for unusable files, the COCO dict every source is scored
through), ``images`` (image files: the one suffix list, folder listing, header and truncation
probes), the readers ``coco``, ``voc``, ``yolo`` and ``mot`` (MOTChallenge sequences, their track
ids and ignore regions), ``layout`` (which layout a path holds: ``detect_layout``; opening its
splits), ``writers`` (one writer per format), ``convert`` (format -> format), ``check`` (the data
check and the start-of-training summary) and ``labels_plot``, ``shapes`` and ``shapes_video`` (the
synthetic generator: images, and sequences for tracking), ``heap`` (loader-worker memory).
Everything downstream (training sets, evaluation, the data check, conversion) reads only the
index."""
