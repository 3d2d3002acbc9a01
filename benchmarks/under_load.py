"""The gateway under load: requests per second and latency of semantic hits, exact-repeat hits
and misses, gateway configurations side by side in one run. Writes the `under_load` section of
docs/BENCHMARKS.md.

    python benchmarks/under_load.py [--seconds 10] [--rounds 3] [--connections 16]

Load comes from wrk (a C load generator: `apt-get install wrk`), so the client takes little of
the two cores the gateway is measured on (a Python client could not drive even the fake
upstream past a few hundred requests/s here). Each round measures, one after another: the fake
upstream called directly (the machine's own HTTP ceiling, for the ratios), then for every
configuration a fresh gateway process: semantic hits (270 distinct paraphrases of 30 stored
questions, never the stored text itself, so every request is embedded), exact-repeat hits
(the stored questions) and misses (a new question every request, answered by the fake
upstream and stored). Rounds alternate the configurations so the drift of a shared VM falls on
all of them; the table shows each row's median round. Every response is checked: a hit row
counts any response that is not a hit as a failure, a miss row any status but 200.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _report import stamp, write_section
from _servers import cross_encoder_off, fake_upstream, gateway
from gateway_latency import COUNTRIES, body

PARAPHRASES = (
    "Which city is the capital of {}?", "What's the capital city of {}?",
    "Name the capital of {}.", "Tell me the capital of {}", "capital of {}?",
    "What city serves as the capital of {}?", "In {}, which city is the capital?",
    "what is {}'s capital", "Could you tell me what the capital of {} is?",
)

# name, worker processes, environment ("{rules_alone}": the overlay turning the cross-encoder
# off, written in the run's folder). All but the last decide every wording anew (verified
# repeats off), so that their semantic row measures the whole path; the last is the default.
ANEW = {"SEMCACHE_VERIFIED_REPEATS": "0"}
CONFIGS: list[tuple[str, int, dict[str, str]]] = [
    ("1 process", 1, ANEW),
    ("2 worker processes (--workers 2)", 2, ANEW),
    ("--workers 2, rules alone (`cross_encoder: false`)", 2,
     {**ANEW, "SEMCACHE_CATEGORIES_OVERLAY": "{rules_alone}"}),
    ("--workers 2, one shared embedding process", 2, {**ANEW, "SEMCACHE_EMBEDDING_SHARED": "on"}),
    ("--workers 2, verified repeats on (the default)", 2, {}),
]

LUA = """
local bodies = {%s}
local threads = {}
local i = 0
local unique = %s
failed = 0
setup = function(thread) table.insert(threads, thread) end
request = function()
  i = i + 1
  local b = bodies[(i %% #bodies) + 1]
  if unique then b = string.format(b, i) end
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, b)
end
response = function(status, headers, body)
  if status ~= 200 or (%s and headers["x-semcache"] ~= "hit") then failed = failed + 1 end
end
done = function(summary, latency, requests)
  local f = 0
  for _, t in ipairs(threads) do f = f + t:get("failed") end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
           latency:percentile(50), latency:percentile(99), f))
end
"""


def lua_literal(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(url: str, path: str, bodies: list[str], seconds: int, conns: int, check_hit: bool,
        tmp: Path, unique: bool = False) -> dict[str, float]:
    """``unique``: each body is a format string; request i sends it with i (no repeats)."""
    script = tmp / "load.lua"
    script.write_text(LUA % (", ".join(lua_literal(b) for b in bodies),
                             "true" if unique else "false", path,
                             "true" if check_hit else "false"))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    assert m, out
    n, dur_us, p50, p99, failed = map(int, m.groups())
    return {"rps": n / (dur_us / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "n": n,
            "failed": failed}


def gateway_cpu(upstream: str) -> float:
    """CPU seconds used so far by the gateway serving ``upstream`` and its worker processes."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = subprocess.run(["pgrep", "-f", f"serve --upstream {upstream}/v1"],
                          capture_output=True, text=True).stdout.split()
    pids += [k for p in pids for k in subprocess.run(
        ["pgrep", "-P", p], capture_output=True, text=True).stdout.split()]
    total = 0.0
    for pid in set(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def seed(gw: str, workers: int) -> None:
    with httpx.Client(timeout=60) as c:
        for x in COUNTRIES:
            r = c.post(f"{gw}/v1/chat/completions", json=body(f"What is the capital of {x}?"))
            assert r.status_code == 200, r.text
        # every worker must have every entry (replica sync) before the load starts
        deadline = time.monotonic() + 30
        probes = [body(PARAPHRASES[0].format(x)) for x in COUNTRIES]
        while True:
            got = [c.post(f"{gw}/v1/chat/completions", json=p).headers["x-semcache"]
                   for p in probes * workers]
            if set(got) == {"hit"}:
                return
            assert time.monotonic() < deadline, got
            time.sleep(0.5)


def measure(args: argparse.Namespace) -> str:
    semantic = [json.dumps(body(t.format(x))) for t in PARAPHRASES for x in COUNTRIES]
    exact = [json.dumps(body(f"What is the capital of {x}?")) for x in COUNTRIES]
    # a format string: wrk puts the request number in, so no miss repeats another
    miss = [json.dumps(body("Explain load test question %d in detail"))]
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as d, fake_upstream() as up:
        tmp = Path(d)
        path = "/v1/chat/completions"
        rules_alone = str(cross_encoder_off(tmp / "rules_alone.yaml"))
        for r in range(args.rounds):
            direct = wrk(up, path, miss, args.seconds, args.connections, False, tmp, unique=True)
            results.setdefault("direct", []).append(direct)
            for c, (name, workers, env) in enumerate(CONFIGS):
                extra = ("--workers", str(workers)) if workers > 1 else ()
                env = {k: v.format(rules_alone=rules_alone) for k, v in env.items()}
                with gateway(up, f"sqlite:///{tmp}/r{r}-{c}.db", *extra, **env) as gw:
                    seed(gw, workers)
                    wrk(gw, path, semantic[:64], 2, args.connections, True, tmp)  # warm
                    cpu = gateway_cpu(up)
                    sem = wrk(gw, path, semantic, args.seconds, args.connections, True, tmp)
                    sem["cpu_ms"] = (gateway_cpu(up) - cpu) / sem["n"] * 1000
                    rows = {
                        "semantic": sem,
                        "exact": wrk(gw, path, exact, args.seconds, args.connections, True, tmp),
                        "miss": wrk(gw, path, miss, args.seconds, args.connections, False, tmp,
                                    unique=True),
                    }
                for kind, row in rows.items():
                    results.setdefault(f"{name}|{kind}", []).append(row)
                print(f"round {r + 1}: {name}: " + ", ".join(
                    f"{k} {v['rps']:.0f}/s" for k, v in rows.items())
                    + f" (direct {direct['rps']:.0f}/s)", flush=True)

    def med(key: str) -> dict[str, float]:
        rows = sorted(results[key], key=lambda x: x["rps"])
        return rows[len(rows) // 2]

    base = med("direct")
    lines = [
        "## Under load: throughput and latency (wrk)",
        "",
        stamp(),
        "",
        f"wrk, {args.connections} connections, one wrk thread, {args.seconds} s per row; "
        f"median of {args.rounds} rounds, the configurations alternating within each round; "
        "gateway, fake upstream and wrk share the machine's cores; SQLite store. Semantic: 270 "
        "distinct paraphrases of 30 stored questions, over and over; with verified repeats "
        "off (`SEMCACHE_VERIFIED_REPEATS=0`, every row but the last) every request is embedded "
        "and verified; in the last row (the default) a wording a worker has served once is "
        "served again on its remembered decision, as the same wordings coming back do in "
        "production; exact: the "
        "stored questions themselves; miss: a new question each request (forwarded, stored). "
        "\"vs direct\" = requests/s over the fake upstream's own requests/s called directly "
        "in the same round (the machine's bare HTTP ceiling). Latency in ms.",
        "",
        "| configuration | request | requests/s | vs direct | p50 | p99 | failed |",
        "|---|---|---|---|---|---|---|",
        f"| fake upstream called directly | - | {base['rps']:.0f} | 1.00 | "
        f"{base['p50_ms']:.1f} | {base['p99_ms']:.1f} | {int(base['failed'])} |",
    ]
    for name, _, _ in CONFIGS:
        for kind, label in (("semantic", "semantic hit"), ("exact", "exact-repeat hit"),
                            ("miss", "miss")):
            m = med(f"{name}|{kind}")
            rps = f"**{m['rps']:.0f}**" if kind == "semantic" else f"{m['rps']:.0f}"
            lines.append(
                f"| {name} | {label} | {rps} | {m['rps'] / base['rps']:.2f} | "
                f"{m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {int(m['failed'])} |")
    rounds = "; ".join(
        f"{name}: " + ", ".join(f"{x['rps']:.0f}" for x in results[name + "|semantic"])
        for name, _, _ in CONFIGS)
    cpu = "; ".join(
        f"{name}: {statistics.median(x['cpu_ms'] for x in results[name + '|semantic']):.1f} ms"
        for name, _, _ in CONFIGS)
    lines += [
        "", f"Semantic hits/s in each round — {rounds}.", "",
        f"Gateway CPU time per semantic hit (all its processes and threads, median round) — "
        f"{cpu}. Hits/s can be at most the cores the gateway gets divided by this; "
        "most of it is the embedding (ONNX Runtime, fp32) and, where it is on (the shipped "
        "categories), the cross-encoder beside the rules (int8, one pair per hit), the rest "
        "HTTP, the cache's Python and the store read. A semantic row counts as failed every "
        "response that is not a hit: a paraphrase the verifier refused (then answered by the "
        "fake upstream and stored, so its repeats are exact hits), or a lookup past its "
        "deadline.",
        "", "The shared-embedding row is `SEMCACHE_EMBEDDING_SHARED=on`: one process embeds for "
        "both workers and batches across them. It is meant for a GPU (`auto` turns it on only "
        "there); on CPU cores it adds two socket hops per batch and leaves the embedding to one "
        "process, which this row measures.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    text = measure(args)
    print(text)
    write_section("under_load", text)


if __name__ == "__main__":
    main()
