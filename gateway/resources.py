"""Where the files that ship beside the code live, in a source checkout and in a wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    # A wheel carries them under gateway/_data/, a source checkout at the repository root.
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the {name}/ directory shipped with semcache")


def migrations_dir() -> Path:
    return _find("migrations")


def categories_dir() -> Path:
    return _find("categories")


def trim_heap() -> None:
    """Give freed heap back to the OS (glibc keeps it after a burst of short-lived objects,
    such as an index rebuild's row batches). No-op where glibc is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            pass
