"""Weight loading for both detectors: strict (resume, evaluation, export) and shape-aware
(fine-tuning), with one-line errors that say which model a checkpoint belongs to instead of
torch's multi-page RuntimeError."""
from pathlib import Path

import torch
from loguru import logger

from detcore.training import checkpoints as ckpt_io
from accel.errors import UserError


def _few(keys, n=3):
    """Up to ``n`` keys from different modules (a BN's five entries say less than three layers)."""
    picked, seen = [], set()
    for key in sorted(keys):
        module = key.rsplit(".", 1)[0]
        if module not in seen:
            seen.add(module)
            picked.append(key)
    more = f" (+{len(keys) - len(picked[:n])} more)" if len(keys) > n else ""
    return ", ".join(picked[:n]) + more


WRAPPER_PREFIXES = ("module.", "_orig_mod.")   # DistributedDataParallel, torch.compile


def strip_prefixes(state):
    """State-dict keys without the prefixes DDP / torch.compile add (the reference's
    distributed checkpoints carry ``module.``), so they load into the bare module."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _model_state(ckpt, source):
    """(source text, bare state dict) of a path, a ``{"model": state_dict}`` dict or a state dict."""
    if isinstance(ckpt, (str, Path)):
        source = f"checkpoint {ckpt}"
        ckpt = ckpt_io.load(ckpt, map_location="cpu")
    if not isinstance(ckpt, dict):
        raise UserError(f"{source} is a {type(ckpt).__name__}, "
                        "expected a state dict or a dict with a 'model' entry")
    state = strip_prefixes(ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{source} holds no model state dict (expected tensors under 'model')")
    return source, state


def differences(own, state):
    """(missing, unexpected, reshaped): sorted key lists that keep ``state`` out of a model whose
    state dict is ``own``."""
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    return missing, unexpected, reshaped


def load_ckpt(model, ckpt, source="checkpoint", hint="check that -n/-f matches the checkpoint", explain=None):
    """Load weights strictly from a path, a ``{"model": state_dict}`` dict or a bare state dict.

    Paths go through ``detcore.training.checkpoints.load`` (``weights_only=True``). Missing,
    unexpected or mis-shaped keys are one UserError ending in ``hint`` instead of torch's
    multi-page RuntimeError. ``explain(own, state, missing, unexpected, reshaped)`` may name the
    usual reason in the model's own terms (another label count): then the line says
    ``SOURCE: does not fit this model (REASON)``; otherwise it lists the keys.
    """
    source, state = _model_state(ckpt, source)
    own = model.state_dict()
    missing, unexpected, reshaped = differences(own, state)
    if missing or unexpected or reshaped:
        why = explain(own, state, missing, unexpected, reshaped) if explain is not None else None
        if why:
            raise UserError(f"{source}: does not fit this model ({why}); {hint}")
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if reshaped:
            k = reshaped[0]
            parts.append(f"shape mismatch for {len(reshaped)} keys, e.g. {k}: "
                         f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise UserError(f"{source} belongs to another model ({'; '.join(parts)}); {hint}")
    model.load_state_dict(state, strict=True)
    return model


def _shape(t):
    return "[" + ",".join(str(d) for d in t.shape) + "]"


# Below this share of the model's tensors loaded, a checkpoint is another model, not a fine-tune.
MIN_SHARED = 0.5


def load_matching(model, ckpt, source="checkpoint", min_shared=MIN_SHARED,
                  hint="check that -n/-f matches the checkpoint"):
    """Fine-tuning load: every tensor whose name and shape fit the model is copied, the others
    keep the model's own (fresh) initialisation, as upstream YOLOX's ``load_ckpt``. A released
    80-class checkpoint thus starts a 4-class model with everything but the class predictions.

    One warning line says what was skipped (shape mismatch, missing from the checkpoint, not in
    the model) with up to three names; a checkpoint that fills fewer than ``min_shared`` of the
    model's tensors is the wrong model and stops with one line ending in ``hint``. Returns the
    loaded key names.
    """
    source, state = _model_state(ckpt, source)
    own = model.state_dict()
    missing, unexpected, reshaped = differences(own, state)
    loaded = sorted(own.keys() & state.keys() - set(reshaped))
    if len(loaded) < min_shared * len(own):
        raise UserError(f"{source} fits only {len(loaded)} of the model's {len(own)} tensors "
                        f"(by name and shape): it belongs to another model, not a fine-tune of "
                        f"this one; {hint}")
    with torch.no_grad():
        for key in loaded:
            own[key].copy_(state[key])
    if reshaped or missing or unexpected:
        shown = ", ".join(f"{k} {_shape(state[k])} -> {_shape(own[k])}" for k in reshaped[:3])
        parts = [f"{len(reshaped)} skipped for a shape mismatch" + (f" ({shown})" if shown else "")]
        parts.append(f"{len(missing)} missing from the checkpoint"
                     + (f" ({_few(missing)})" if missing else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} not in the model ({_few(unexpected)})")
        logger.warning(f"{source}: loaded {len(loaded)} of {len(own)} tensors; {'; '.join(parts)}; "
                       "those keep their fresh initialisation")
    return loaded
