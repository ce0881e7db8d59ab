"""User-facing errors: one line naming the file or flag and what was expected, never a traceback."""
import functools
import sys


class UserError(Exception):
    """A mistake in the user's input (flag, file, data). Its message is shown as-is, on one line."""


def cli_entry(main):
    """Wrap a CLI ``main``: a UserError becomes ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            msg = " ".join(str(exc).split())
            print(f"error: {msg}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
