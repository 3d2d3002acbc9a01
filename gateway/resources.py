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
