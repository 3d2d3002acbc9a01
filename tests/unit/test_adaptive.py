from __future__ import annotations

import pytest

from gateway.backend.load import HYSTERESIS, LoadMonitor
from gateway.cache import policy
from gateway.categories import Category, load_categories
from gateway.config import Settings
from gateway.resources import categories_dir

CATS = load_categories(categories_dir())


def test_thresholds_and_ttls_stay_within_bounds() -> None:
    code = CATS["code"]
    assert code.adaptive is not None
    assert policy.effective_threshold(code, 0.0) == code.threshold
    assert policy.effective_threshold(code, 0.5) == code.threshold  # the knee
    mid = policy.effective_threshold(code, 0.75)
    assert code.adaptive.threshold_min < mid < code.threshold
    assert policy.effective_threshold(code, 1.0) == pytest.approx(code.adaptive.threshold_min)
    assert policy.effective_threshold(code, 7.0) == pytest.approx(code.adaptive.threshold_min)
    for load in (0.0, 0.6, 0.9, 1.0):
        assert policy.effective_ttl(CATS["finance_news"], load) == 300  # never longer
        assert not CATS["personal"].cacheable
    assert policy.effective_ttl(code, 1.0) == code.adaptive.ttl_max_seconds
    plain = Category.model_validate({**code.model_dump(), "adaptive": None})
    assert policy.effective_threshold(plain, 1.0) == plain.threshold


def test_bounds_are_validated() -> None:
    data = CATS["code"].model_dump()
    with pytest.raises(ValueError, match="threshold_min"):
        Category.model_validate({**data, "adaptive": {"threshold_min": 0.99}})
    with pytest.raises(ValueError, match="ttl_max_seconds"):
        Category.model_validate({**data, "adaptive": {"threshold_min": 0.5, "ttl_max_seconds": 1}})


VLLM_METRICS = """# HELP vllm:num_requests_waiting x
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 12.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.25
"""


def test_load_factor_from_backend_gauges_with_smoothing_and_hysteresis() -> None:
    mon = LoadMonitor(Settings(load_queue_full=16))
    mon.read_backend(VLLM_METRICS)
    assert mon.backend == {"waiting": 12.0, "running": 3.0, "kv": 0.25}
    assert mon.raw() == pytest.approx(0.75)
    values = [mon.tick() for _ in range(12)]
    assert values[0] < values[-1] <= 0.75  # smoothed, not jumping
    assert values[-1] == pytest.approx(0.75, abs=HYSTERESIS)
    settled = values[-1]
    # small wobble of the raw signal does not move the published factor
    for waiting in (11, 13, 12, 11, 13):
        mon.backend["waiting"] = waiting
        assert mon.tick() == settled
    mon.backend = {}
    for _ in range(30):
        mon.tick()
    assert mon.factor == 0.0


def test_load_from_what_the_gateway_sees() -> None:
    mon = LoadMonitor(Settings(load_inflight_full=4, load_latency_ratio_full=3))
    for _ in range(20):
        mon.answered(0.1, 200)
    assert mon.raw() == pytest.approx(0.0, abs=0.01)
    for _ in range(4):
        mon.started()
    assert mon.raw() == 1.0
    for _ in range(4):
        mon.finished()
    for _ in range(30):
        mon.answered(0.5, 200)  # five times slower than the baseline
    assert mon.raw() > 0.9
    refusing = LoadMonitor(Settings())
    for _ in range(30):
        refusing.answered(0.1, 429)
    assert refusing.raw() > 0.9


def test_a_few_slow_or_failed_requests_do_not_make_full_load_and_it_fades() -> None:
    """Issue 17, item 7: two requests that timed out (504 after the upstream timeout) left the
    factor at 1.0 with the backend idle, loosening thresholds and stretching TTLs."""
    mon = LoadMonitor(Settings(load_latency_ratio_full=4))
    for _ in range(20):
        mon.answered(0.05, 200)
        mon.tick()
    for _ in range(2):
        mon.answered(None, 503)   # timed out after 600 s: no first byte
        mon.answered(600.0, 200)  # or answered, but very late
    assert mon.raw() < 0.5        # below the knee: thresholds and TTLs stay as configured
    for _ in range(15):           # idle backend, no traffic: the signals fade
        mon.tick()
    assert mon.raw() < 0.02 and mon.factor < 0.02
    # a sustained slowdown still reads as full load
    for _ in range(40):
        mon.answered(0.5, 200)
    assert mon.raw() > 0.95
