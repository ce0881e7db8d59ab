"""Whether torch.compile is tracing the code that runs now: the model's few compile-aware spots
(the SPP pools' opaque op, ``Upsample2x``'s gradient hook) ask here."""
import torch


def compiling():
    """True while torch.compile traces (``torch.compiler`` is absent before torch 2.1)."""
    compiler = getattr(torch, "compiler", None)
    return compiler is not None and compiler.is_compiling()
