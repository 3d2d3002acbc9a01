"""Settings whose defaults depend on where they apply."""

from __future__ import annotations

from gateway.config import Settings


def test_the_shared_embedding_process_does_not_wait_for_company_unless_told() -> None:
    """On the H200 the shared process waiting 2 ms for company cost 6-13% of semantic hits/s
    and 5-8 ms at moderate load (docs/BENCHMARKS.md, gpu_gateway): unset, it does not wait; a
    process embedding for itself keeps its 2 ms; a value set applies to both."""
    assert Settings().batch_wait_s(shared_process=True) == 0.0
    assert Settings().batch_wait_s(shared_process=False) == 0.002
    explicit = Settings(embedding_batch_wait_ms=3)
    assert explicit.batch_wait_s(shared_process=True) == explicit.batch_wait_s(shared_process=False) \
        == 0.003
