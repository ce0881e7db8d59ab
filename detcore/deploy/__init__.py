"""Deploy: what runs an exported model without torch.

``runtime`` (the one ``Detector`` class), ``preprocess`` and ``postprocess`` (its numpy pre- and
post-processing for YOLOX and SSD300: inputs, decode, NMS), ``metadata`` (what the exporters record
in the file, the fallback class names), ``backends`` (onnxruntime, OpenVINO), ``letterbox``,
``draw`` and ``media`` (images, video, camera, result files), ``export_graph`` (NMS appended to an
exported graph, OpenVINO IR), ``quantize`` and ``quantize_cli`` (static INT8), ``kalman`` and
``tracker`` (ByteTrack multi-object tracking; the assignment needs scipy: ``detkit[track]``).
Nothing here imports torch (tests/test_architecture.py checks)."""
