"""Old import paths of the modules that moved into ``detcore``'s sub-packages in 0.2.

``detcore.check_data``, ``detcore.convert``, ``detcore.make_shapes``, ``detcore.quantize_cli`` and
``detcore.onnx_runtime`` are named by docs/api.md, by the console scripts of 0.1 and by
``python -m``; they keep working for one release. Each old module IS the new one (the same module
object in ``sys.modules``), so attributes, monkeypatches and ``isinstance`` checks agree; importing
it warns once (``FutureWarning``: shown by default, unlike ``DeprecationWarning``).
"""
import importlib
import runpy
import sys
import warnings


def alias(old, new):
    """Make the module being imported as ``old`` the module ``new``; run ``new`` as a script when
    ``old`` is run with ``python -m``."""
    if old == "__main__":
        runpy.run_module(new, run_name="__main__", alter_sys=True)
        return
    warnings.warn(f"{old} has moved to {new}; the old name goes in the next release",
                  FutureWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
