"""What a miss costs on top of the upstream call, with and without hedging, measured in one
run. Writes the `hedge_overhead` section of docs/BENCHMARKS.md.

    python benchmarks/hedge_overhead.py [--n 60]

The fake upstream answers after a fixed 100 ms (``x-fake-delay``). Same questions (new each
time, so every request is a miss), same gateway settings, one gateway with `hedge: true` for
every category and one without.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import pct, stamp, write_section
from _servers import fake_upstream, gateway

CATS = ("code", "math", "factual", "conversation", "finance_news", "creative", "general")


def measure(url: str, n: int, tag: str) -> list[float]:
    times = []
    with httpx.Client(timeout=30) as c:
        for i in range(n):
            body = {"model": "fake-small",
                    "messages": [{"role": "user", "content": f"Describe the history of place {tag}-{i}"}]}
            t0 = time.perf_counter()
            r = c.post(url, json=body, headers={"x-fake-delay": "0.1"})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.headers.get("x-semcache", "miss") != "hit", (r.status_code, dict(r.headers), r.text[:300])
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    n = ap.parse_args().n
    tmp = Path(tempfile.mkdtemp())
    rows = {}
    with fake_upstream() as up:
        rows["direct upstream call"] = measure(f"{up}/v1/chat/completions", n, "d")
        for hedge in (False, True):
            overlay = tmp / f"h{hedge}.yaml"
            overlay.write_text(yaml.safe_dump({c: {"hedge": hedge} for c in CATS}))
            with gateway(up, f"sqlite:///{tmp}/h{hedge}.db",
                         SEMCACHE_CATEGORIES_OVERLAY=str(overlay)) as gw:
                measure(f"{gw}/v1/chat/completions", 10, f"warm{hedge}")
                rows[f"gateway miss, hedge {'on' if hedge else 'off'}"] = measure(
                    f"{gw}/v1/chat/completions", n, f"h{hedge}")
    base = pct(rows["direct upstream call"], .5)
    lines = ["## Miss overhead with and without hedging", "", stamp(), "",
             f"{n} sequential misses per row; the upstream takes 100 ms. Added = p50 − direct p50.",
             "", "| row | p50 ms | p99 ms | added p50 ms |", "|---|---|---|---|"]
    for name, xs in rows.items():
        lines.append(f"| {name} | {pct(xs, .5):.1f} | {pct(xs, .99):.1f} | {pct(xs, .5) - base:.1f} |")
    lines += ["", "Hedging starts the upstream call once the query is embedded and classified "
              "(the category decides), so it hides the search, verification and store read, not "
              "the embedding."]
    text = "\n".join(lines)
    print(text)
    write_section("hedge_overhead", text)


if __name__ == "__main__":
    main()
