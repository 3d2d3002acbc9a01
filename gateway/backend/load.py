"""The backend's load, as one factor in [0, 1] (docs/ADAPTIVE.md).

Signals, each mapped to [0, 1]; the load is the largest (any one saturated resource is
enough to call the backend overloaded):

- backend queue: ``vllm:num_requests_waiting`` / ``load_queue_full`` (polled from the
  backend's Prometheus endpoint, when it has one), and ``vllm:kv_cache_usage_perc``;
- requests in flight from this gateway / ``load_inflight_full``;
- upstream time-to-first-byte: its fast EWMA against a slow baseline, (ratio - 1) /
  (``load_latency_ratio_full`` - 1);
- share of 429/503 answers (EWMA), doubled (half the answers refused = full load).

The raw value is smoothed (EWMA) every poll, and the published factor only moves when the
smoothed one is more than ``HYSTERESIS`` away from it, so thresholds do not flap.

What the gateway observes must not stick or be forged cheaply: a request that timed out or
could not connect says nothing about time to first byte (it counts as refused only); one TTFB
sample moves the fast EWMA at most as far as full load (``load_latency_ratio_full`` times the
baseline), so a handful of slow requests cannot make full load (about twenty in a row can); and
a poll that saw no answers moves both signals back toward normal, so an idle backend reads idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Settings, server_root

log = logging.getLogger(__name__)

SMOOTHING = 0.4
HYSTERESIS = 0.1
_BACKEND_GAUGES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "kv",
    "vllm:gpu_cache_usage_perc": "kv",  # name before vLLM V1
}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def metrics_url(settings: Settings) -> str | None:
    if settings.upstream_metrics_url == "off":
        return None
    if settings.upstream_metrics_url:
        return settings.upstream_metrics_url
    return server_root(settings.first_backend_url()) + "/metrics"


class LoadMonitor:
    def __init__(self, settings: Settings, on_change: Callable[[float], None] | None = None):
        self.settings = settings
        self.url = metrics_url(settings)
        self._listeners: list[Callable[[float], None]] = [on_change] if on_change else []
        self.in_flight = 0
        self.backend: dict[str, float] = {}
        self._ttfb_fast: float | None = None
        self._ttfb_base: float | None = None
        self._refused = 0.0
        self._answers = 0   # since the last tick
        self._smooth = 0.0
        self.factor = 0.0
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: Callable[[float], None]) -> None:
        """``listener(factor)`` on every change of the published factor."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[float], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- what the gateway observes itself ---------------------------------------------
    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def answered(self, ttfb_s: float | None, status: int) -> None:
        """An upstream call ended: its time to first byte (None: it never answered) and status."""
        self._answers += 1
        self._refused += 0.1 * ((1.0 if status in (429, 503) else 0.0) - self._refused)
        if ttfb_s is None:
            return
        fast, base = self._ttfb_fast, self._ttfb_base
        if base:  # one sample counts for at most full load
            ttfb_s = min(ttfb_s, base * self.settings.load_latency_ratio_full)
        self._ttfb_fast = ttfb_s if fast is None else fast + 0.2 * (ttfb_s - fast)
        if base is None or self._ttfb_fast < base:
            self._ttfb_base = self._ttfb_fast
        else:  # the baseline creeps up slowly, so a lasting change of model or hardware is learnt
            self._ttfb_base = base + 0.002 * (self._ttfb_fast - base)

    # --- the factor -------------------------------------------------------------------
    def raw(self) -> float:
        s = self.settings
        signals = [_clip(self.in_flight / s.load_inflight_full), _clip(2 * self._refused)]
        if "waiting" in self.backend:
            signals.append(_clip(self.backend["waiting"] / s.load_queue_full))
        if "kv" in self.backend:
            signals.append(_clip(self.backend["kv"]))
        if self._ttfb_fast is not None and self._ttfb_base:
            ratio = self._ttfb_fast / max(self._ttfb_base, 1e-4)
            signals.append(_clip((ratio - 1) / (s.load_latency_ratio_full - 1)))
        return max(signals)

    def tick(self) -> float:
        """One smoothing step; returns the published factor."""
        if self._answers == 0:  # nothing new: what the last answers said fades
            self._refused *= 0.7
            if self._ttfb_fast is not None and self._ttfb_base is not None:
                self._ttfb_fast += 0.3 * (self._ttfb_base - self._ttfb_fast)
        self._answers = 0
        self._smooth += SMOOTHING * (self.raw() - self._smooth)
        target = self._smooth
        if abs(target - self.factor) >= HYSTERESIS or (target < 0.02 and self.factor > 0) \
                or (target > 0.98 and self.factor < 1):
            self.factor = round(target, 3)
            for listener in list(self._listeners):
                listener(self.factor)
        return self.factor

    # --- the backend's own gauges ----------------------------------------------------
    def read_backend(self, text: str) -> None:
        seen: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            key = _BACKEND_GAUGES.get(family.name)
            if key is not None:
                seen[key] = sum(sample.value for sample in family.samples)
        self.backend = seen

    async def run(self, client: httpx.AsyncClient) -> None:
        while True:
            if self.url is not None:
                try:
                    r = await client.get(self.url, timeout=2.0)
                    if r.status_code == 200:
                        self.read_backend(r.text)
                    else:
                        self.backend = {}
                except httpx.HTTPError:
                    self.backend = {}
            self.tick()
            await asyncio.sleep(self.settings.load_poll_interval_s)

    def start(self, client: httpx.AsyncClient) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(client), name="load")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
