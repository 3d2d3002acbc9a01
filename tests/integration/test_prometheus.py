"""Observability proven on a real Prometheus (issue 22): Debian's ``prometheus`` and ``promtool``
(``.ci/run`` installs them; elsewhere these tests skip with the reason, and under the CI's
``SEMCACHE_REQUIRE_*`` flags a skip fails the run).

A real Prometheus scrapes a running gateway and the fake backend's vLLM-named metrics, with the
shipped alert rules loaded; after traffic of every kind, every PromQL expression of the shipped
dashboard is evaluated through Prometheus' HTTP API and must return series with the labels it
groups by, and every alert rule must be loaded and healthy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.devtools.serverthread import ServerThread, free_port
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

ROOT = Path(__file__).parents[2]
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package (prometheus, promtool) is not installed "
           "(apt-get install prometheus; .ci/run does)")


@needs_prometheus
def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    for args in (["check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
                 ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([PROMTOOL, *args], cwd=ROOT / "tests/prometheus",  # type: ignore[list-item]
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    names = {r["alert"] for g in yaml.safe_load(
        (ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", (ROOT / "tests/prometheus/alerts_test.yml")
                            .read_text()))
    assert names == tested, names ^ tested  # every alert has its unit test
    assert len(names) == 8


@pytest.fixture
def prometheus(tmp_path: Path, fake_upstream: ServerThread) -> Iterator[tuple[str, list[str]]]:
    """A Prometheus on loopback; the caller adds scrape targets to the returned list before
    the first scrape (they are written to its file-based service discovery)."""
    port = free_port()
    targets: list[str] = []
    sd = tmp_path / "targets.json"
    sd.write_text("[]")
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "semcache", "file_sd_configs": [{"files": [str(sd)],
                                                           "refresh_interval": "1s"}]},
            {"job_name": "backend", "static_configs": [{"targets": [
                fake_upstream.url.removeprefix("http://")]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",  # type: ignore[list-item]
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.2)

        class Targets(list[str]):
            def append(self, target: str) -> None:
                super().append(target)
                sd.write_text(json.dumps([{"targets": list(self)}]))

        targets = Targets()
        yield url, targets
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()


def query(url: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = r.json()
    return body


def dashboard_exprs() -> list[str]:
    exprs: list[str] = []
    for path in (ROOT / "deploy/grafana/dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", [])]
    return exprs


@needs_prometheus
def test_every_dashboard_query_and_alert_rule_works_on_a_real_prometheus(
    prometheus: tuple[str, list[str]], gateway_factory: GatewayFactory,
    embedder: SentenceTransformerEmbedder, tmp_path: Path,
) -> None:
    url, targets = prometheus
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/p.db",
                         admin_key="adm", backend_probe_interval_s=0.5)
    targets.append(gw.url.removeprefix("http://"))
    chat = f"{gw.url}/v1/chat/completions"

    def ask(q: str, **headers: str) -> httpx.Response:
        return httpx.post(chat, timeout=30, headers={"authorization": "Bearer sk-p", **headers},
                          json={"model": "fake-small", "messages": [{"role": "user",
                                                                     "content": q}]})

    def traffic() -> None:
        for q in ("What is the capital of France?", "Which city is the capital of France?",
                  "What is the capital of Spain?",  # near miss: the verifier rejects it
                  "Write a Python function that reverses a string",
                  "Write a Python function that reverses a string",
                  "What is my account balance?"):  # a bypass
            ask(q)
        ask("Why is the sky green?", **{"x-fake-status": "500"})  # an upstream error
        for _ in range(2):  # RAG requests: the backend's prefix-cache counters
            httpx.post(chat, timeout=30, json={"model": "fake-small", "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Passage one, long."},
                                             {"type": "text", "text": "What does it say?"}]}]})

    traffic()
    entry = ask("Which city is the capital of France?").headers["x-semcache-entry"]
    r = httpx.post(f"{gw.url}/admin/feedback", headers={"authorization": "Bearer adm"},
                   json={"entry_id": int(entry), "reason": "test"})
    assert r.status_code == 200, r.text
    # several scrapes with traffic in between, so that every rate() has samples to work on
    deadline = time.monotonic() + 60
    while True:
        traffic()
        up = query(url, 'count(up == 1)')["data"]["result"]
        fed = query(url, "sum(semcache_feedback_total)")["data"]["result"]
        samples = query(url, 'count_over_time(semcache_backend_load[1m])')["data"]["result"]
        if up and up[0]["value"][1] == "2" and fed and float(fed[0]["value"][1]) >= 1 \
                and samples and float(samples[0]["value"][1]) >= 5:
            break
        assert time.monotonic() < deadline, (up, fed, samples)
        time.sleep(0.5)

    failures = []
    assert len(dashboard_exprs()) >= 30
    for expr in dashboard_exprs():
        body = query(url, expr)
        if body.get("status") != "success":
            failures.append((expr, body.get("error")))
            continue
        result = body["data"]["result"]
        if not result:
            failures.append((expr, "no series"))
            continue
        grouped = re.findall(r"\bby\s*\(([^)]*)\)", expr)
        labels = {lbl.strip() for g in grouped for lbl in g.split(",")} - {"le", ""}
        for series in result:
            missing = labels - set(series["metric"])
            if missing:
                failures.append((expr, f"series without {missing}: {series['metric']}"))
                break
    assert not failures, failures

    rules = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert len(loaded) == 8, sorted(loaded)
    assert all(r["health"] == "ok" for r in loaded.values()), {
        n: r.get("lastError") for n, r in loaded.items() if r["health"] != "ok"}
    for name, rule in loaded.items():  # and each expression evaluates
        assert query(url, rule["query"])["status"] == "success", name
