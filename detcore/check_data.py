"""Moved to ``detcore.data.check``; this name works for one more release (see detcore/moved.py)."""
from detcore.moved import alias

alias(__name__, "detcore.data.check")
