"""Shared by the benchmark scripts: machine description and section replacement in
docs/BENCHMARKS.md (each script owns the text between its own markers)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every figure here is written by a script under `benchmarks/`, with the machine and the date of
the run. Re-run the script to refresh its section; do not edit numbers by hand.
"""


def machine() -> str:
    """The CPU as /proc/cpuinfo names it, with its family / model and whether it has VNNI (int8
    dot products): VMs of one name have differed in both, and int8 inference cost with them."""
    cpu, detail = platform.processor() or platform.machine(), []
    try:
        info = dict(line.split(":", 1) for line in
                    Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = info.get("model name", cpu)
        if "cpu family" in info:
            detail.append(f"family {info['cpu family']} model {info.get('model', '?')}")
        flags = info.get("flags", "").split()
        detail.append("AVX-512 VNNI" if "avx512_vnni" in flags else
                      "AVX2, no VNNI" if "avx2" in flags else "no AVX2")
    except OSError:
        pass
    shown = f"{cpu} ({', '.join(detail)})" if detail else cpu
    return f"{shown}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def stamp() -> str:
    return f"_Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}._"


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def pct(xs: list[float], p: float) -> float:
    """The p-th quantile of seconds, in milliseconds (nearest rank; 0 for no data)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else 0.0
