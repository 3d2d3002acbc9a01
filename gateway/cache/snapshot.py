"""Index snapshots: a restart loads the HNSW graphs instead of rebuilding them.

Rebuilding a graph costs about 25 s per 100k entries on 2 cores; loading a saved one about
0.15 s (docs/BENCHMARKS.md). A snapshot is written on graceful shutdown (and on demand) to
``index_snapshot_dir``: one graph + metadata per category, the exact-repeat map, and a manifest
with the model fingerprint and the highest row id it covers. On start the snapshot is loaded
only if its fingerprint matches, then reconciled with the store, which stays the truth: rows
deleted since (or whose id was reused: different expiry) leave the index, rows newer than the
snapshot are added. A snapshot that is missing, foreign or unreadable means a full rebuild.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.cache.index import CategoryIndex, ExactIndex

log = logging.getLogger(__name__)
FORMAT = 2


@dataclass
class Snapshot:
    indexes: dict[str, CategoryIndex]
    exact: ExactIndex
    watermark: int


def save(
    directory: Path, indexes: dict[str, CategoryIndex], exact: ExactIndex, watermark: int,
    fingerprint: str,
) -> None:
    started = time.monotonic()
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, index in indexes.items():
        index.save(tmp / name)
    (tmp / "exact.pickle").write_bytes(pickle.dumps(exact.state(), protocol=5))
    manifest = {"format": FORMAT, "fingerprint": fingerprint, "watermark": watermark,
                "categories": sorted(indexes), "written_at": time.time()}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    log.info("index snapshot written: %s entries in %.2fs",
             sum(len(i) for i in indexes.values()), time.monotonic() - started)


def load(directory: Path, dim: int, fingerprint: str, categories: list[str]) -> Snapshot | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or manifest.get("fingerprint") != fingerprint:
            log.info("index snapshot ignored: written for another model or format")
            return None
        indexes = {
            name: CategoryIndex.load(directory / name, dim)
            if name in manifest["categories"] else CategoryIndex(dim)
            for name in categories
        }
        exact = ExactIndex.from_state(pickle.loads((directory / "exact.pickle").read_bytes()))
        return Snapshot(indexes, exact, int(manifest["watermark"]))
    except Exception:
        log.warning("index snapshot unreadable; rebuilding from the store", exc_info=True)
        return None
