"""The YOLOX command-line tools as modules of the package, so an installed copy runs them as
upstream HEAD's ``python -m yolox.tools.train`` (and eval, demo, export_onnx, export_torchscript)
or through the ``detkit-*`` console scripts; the checkout's ``tools/*.py`` are thin wrappers that
keep the seed command lines (``python tools/train.py ...``) working unchanged."""
