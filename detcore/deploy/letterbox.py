"""YOLOX's input geometry, shared by training, evaluation, the PyTorch demo and the torch-free
ONNX runtime (numpy + OpenCV only, so ``detcore.deploy.runtime`` can use it without importing torch).
"""
import cv2
import numpy as np

PAD_VALUE = 114          # upstream's fill of the padded border (and of mosaic / affine borders)


def letterbox(img, input_size, swap=(2, 0, 1), dtype=np.float32):
    """Resize keeping aspect ratio into ``input_size`` (h, w), pad bottom/right with 114.

    Returns the padded image as a contiguous ``dtype`` array (CHW with the default ``swap``) and
    the ratio r, so that a box in the source image maps to ``box * r``. Training asks for uint8:
    the pixels are whole numbers either way, and a quarter of the bytes go through the collate,
    the worker-to-trainer queue and the host-to-device copy (the trainer converts to float there).
    """
    h, w = img.shape[:2]
    r = min(input_size[0] / h, input_size[1] / w)
    nh, nw = int(h * r), int(w * r)
    if (nh, nw) == (h, w) == tuple(input_size):    # already the input size (a mosaic): nothing to pad
        padded = img
    else:
        padded = np.full((input_size[0], input_size[1], 3), PAD_VALUE, dtype=np.uint8)
        padded[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else img
    if swap is not None:
        padded = padded.transpose(swap)
    return np.ascontiguousarray(padded, dtype=dtype), r
