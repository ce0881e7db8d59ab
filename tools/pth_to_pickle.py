"""Convert a torchvision-format ``.pth`` state dict to a pickled dict of numpy arrays.

Usage: python tools/pth_to_pickle.py resnet34-333f7ec4.pth [resnet34.pkl]
Lets frameworks without torch (or without unpickling torch files) read the weights.
"""
import argparse
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from detcore.training import checkpoints as checkpoint  # noqa: E402
from detcore.files import replace_atomic  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402


def state_dict_of(obj, path):
    """The tensor dict inside a loaded file: a bare state dict or one under "model"/"state_dict"."""
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (torchvision .pth format)")
    return obj


def describe(arrays):
    """The reference's ``-v`` listing: a header, then name, dtype, shape, mean, std, min, max."""
    lines = ["name, dtype, mean, std, min, max"]
    for key, value in arrays.items():
        v = value.astype("float64")
        lines.append(f"{key}, {value.dtype}, {value.shape}, {v.mean():0.3}, {v.std():0.3}, "
                     f"{v.min():0.3}, {v.max():0.3}")
    return "\n".join(lines)


def convert(src, dst, verbose=False):
    """Write ``dst`` = pickle of {name: numpy array} for every tensor of ``src``; returns the count."""
    weights = state_dict_of(checkpoint.load(src), src)
    arrays = {k: v.detach().cpu().numpy() for k, v in weights.items()}
    if verbose:
        print(describe(arrays))
    replace_atomic(dst, pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL))
    return len(arrays)


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pth", type=Path, help="input .pth (torchvision state dict)")
    parser.add_argument("output", type=Path, nargs="?", help="output pickle (default: input with .pkl)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print parameter names and statistics (as the reference)")
    args = parser.parse_args(argv)
    out = args.output or args.pth.with_suffix(".pkl")
    count = convert(args.pth, out, args.verbose)
    print(f"wrote {count} arrays to {out}")


if __name__ == "__main__":
    main()
