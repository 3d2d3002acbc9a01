"""gpu.GpuTurns: models on one GPU run side by side, a capture has it alone."""

from __future__ import annotations

import threading
import time

from gateway.embedding.gpu import GpuTurns


def _started(target: object) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    t.start()
    return t


def test_models_run_side_by_side() -> None:
    turns, inside, both = GpuTurns(), [], threading.Barrier(2, timeout=5)

    def work() -> None:
        with turns.side_by_side():
            inside.append(1)
            both.wait()  # fails (BrokenBarrierError) unless the other is inside too

    threads = [_started(work) for _ in range(2)]
    for t in threads:
        t.join(5)
    assert inside == [1, 1] and not both.broken


def test_a_capture_waits_for_running_work_and_holds_new_work_back() -> None:
    turns, log = GpuTurns(), []
    release = threading.Event()

    def running() -> None:
        with turns.side_by_side():
            log.append("run")
            release.wait(5)
            log.append("run done")

    def capture() -> None:
        with turns.alone():
            log.append("capture")
            time.sleep(0.05)
            log.append("capture done")

    def later() -> None:
        with turns.side_by_side():
            log.append("later")

    first = _started(running)
    while log != ["run"]:
        time.sleep(0.005)
    cap = _started(capture)
    time.sleep(0.05)
    after = _started(later)  # arrives while the capture waits: goes after it
    time.sleep(0.05)
    assert log == ["run"]  # the capture waits for the running call, new work waits for both
    release.set()
    for t in (first, cap, after):
        t.join(5)
    assert log == ["run", "run done", "capture", "capture done", "later"]
