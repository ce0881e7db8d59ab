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
    """'(640,640)', '640,640' or '[0.5, 1.5]' -> same container type and length as ``current``."""
    body = text.strip()
    if body[:1] in "([" and body[-1:] in ")]":
        body = body[1:-1]
    parts = [p for p in body.replace(" ", ",").split(",") if p]
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
            setattr(self, key, value)

    def __repr__(self):
        rows = [(k, repr(v)) for k, v in sorted(self.settings().items())]
        return tabulate(rows, headers=["keys", "values"], tablefmt="fancy_grid")
