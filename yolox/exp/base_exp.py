"""Experiment base: attributes are the configuration; ``merge`` applies typed command-line overrides."""
from tabulate import tabulate

from accel.errors import UserError

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _parse_bool(text):
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{text!r} is not True/False")


def _parse_number(text, like):
    """Parse ``text`` as the numeric type of ``like`` (an int slot accepts only whole numbers)."""
    if isinstance(like, int):
        return int(text.strip())
    return float(text.strip())


def _parse_sequence(text, current):
    """'(640,640)', '640,640' or '[0.5, 1.5]' -> same container type and length as ``current``.
    A sequence of names (``class_names star,circle``) takes any length: your data's class list."""
    body = text.strip()
    if body[:1] in "([" and body[-1:] in ")]":
        body = body[1:-1]
    parts = [p for p in body.replace(" ", ",").split(",") if p]
    if current and all(isinstance(v, str) for v in current):
        if not parts:
            raise ValueError("expected comma-separated names")
        return type(current)(parts)
    if len(parts) != len(current):
        raise ValueError(f"expected {len(current)} comma-separated values, got {len(parts)}")
    all_int = all(isinstance(v, int) and not isinstance(v, bool) for v in current)
    values = [int(p) if all_int else float(p) for p in parts]
    return type(current)(values)


def convert_value(text, current):
    """Convert the string ``text`` to the type of the attribute's ``current`` value."""
    if isinstance(current, bool):
        return _parse_bool(text)
    if isinstance(current, (int, float)):
        return _parse_number(text, current)
    if isinstance(current, (tuple, list)):
        return _parse_sequence(text, current)
    if isinstance(current, str):
        return text
    raise ValueError(f"attribute of type {type(current).__name__} cannot be set from the command line")


class BaseExp:
    """Holds one experiment's settings; subclasses set attributes in ``__init__``."""

    # Attributes that may be None: their value type, and "None" resets them.
    optional_types = {"seed": int, "data_dir": str}
    # Lowest value an override may take (every element, for sizes): what has an obvious range.
    minimums = {"max_epoch": 1, "warmup_epochs": 0, "no_aug_epochs": 0, "eval_interval": 1,
                "print_interval": 1, "steps": 0, "data_num_workers": 0, "multiscale_range": 0,
                "input_size": 32, "test_size": 32, "num_classes": 1, "basic_lr_per_img": 1e-12,
                "weight_decay": 0.0, "momentum": 0.0, "warmup_lr": 0.0, "min_lr_ratio": 0.0,
                "test_conf": 0.0, "nmsthre": 0.0, "mosaic_prob": 0.0, "mixup_prob": 0.0,
                "hsv_prob": 0.0, "flip_prob": 0.0, "patience": 0}
    maximums = {"mosaic_prob": 1.0, "mixup_prob": 1.0, "hsv_prob": 1.0, "flip_prob": 1.0,
                "test_conf": 1.0, "nmsthre": 1.0, "momentum": 1.0, "min_lr_ratio": 1.0}
    # Attributes that take one of a few names (the trainer's MetricWatch reads best_metric).
    choices = {"best_metric": ("ap50_95", "ap50", "val_loss")}

    def __init__(self):
        self.seed = None
        self.output_dir = "./YOLOX_outputs"
        self.print_interval = 100
        self.eval_interval = 10

    def settings(self):
        """Public plain-valued attributes: the keys ``merge`` accepts and ``repr`` shows.

        Objects attached at run time (the trainer sets ``exp.model``) are not configuration.
        """
        plain = (bool, int, float, str, tuple, list, type(None))
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, plain)}

    def merge(self, cfg_list):
        """Apply ``[key, value, key, value, ...]`` overrides, converting each to the attribute's type."""
        cfg_list = list(cfg_list or [])
        valid = ", ".join(sorted(self.settings()))
        if len(cfg_list) % 2:
            raise UserError(f"exp overrides must be 'key value' pairs; got an odd count ({cfg_list}); "
                            f"valid keys: {valid}")
        for key, text in zip(cfg_list[0::2], map(str, cfg_list[1::2])):
            if key.startswith("_") or key not in self.settings():
                raise UserError(f"unknown exp override key {key!r}; valid keys: {valid}")
            current = getattr(self, key)
            optional = self.optional_types.get(key)
            try:
                if optional is not None:
                    value = None if text.strip() == "None" else optional(text)
                else:
                    value = convert_value(text, current)
            except ValueError as exc:
                kind = (optional or type(current)).__name__
                raise UserError(f"exp override {key} {text!r}: expected {kind} ({exc}); "
                                f"valid keys: {valid}") from None
            self._check_range(key, text, value)
            setattr(self, key, value)
            # what the user set (a ``key value`` pair, a Detector keyword): a setting the data may
            # not override (``num_classes``: see yolox_base.Exp.sync_classes)
            self._overridden = getattr(self, "_overridden", frozenset()) | {key}

    def _check_range(self, key, text, value):
        values = value if isinstance(value, (tuple, list)) else (value,)
        low, high = self.minimums.get(key), self.maximums.get(key)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if (low is not None and v < low) or (high is not None and v > high):
                bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise UserError(f"exp override {key} {text!r}: must be {bounds}")
        allowed = self.choices.get(key)
        if allowed is not None and value not in allowed:
            raise UserError(f"exp override {key} {text!r}: expected one of {', '.join(allowed)}")
        if key in ("input_size", "test_size") and any(int(v) % 32 for v in values):
            raise UserError(f"exp override {key} {text!r}: sizes must be multiples of 32 (the stride)")

    def __repr__(self):
        rows = [(k, repr(v)) for k, v in sorted(self.settings().items())]
        return tabulate(rows, headers=["keys", "values"], tablefmt="fancy_grid")
