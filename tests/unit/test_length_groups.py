"""Splitting an embedding batch by token length (pure logic)."""

from __future__ import annotations

import numpy as np

from gateway.embedding import length_groups


def test_a_long_query_does_not_pad_a_batch_of_short_ones() -> None:
    assert length_groups([10] * 15 + [200], 16) == [list(range(15)), [15]]
    # similar lengths stay one run: a split would cost more than the padding it saves
    assert length_groups([6, 13, 9, 10, 8, 12, 7, 11], 16) == [[0, 6, 4, 2, 3, 7, 5, 1]]
    assert length_groups([], 16) == []
    # splitting is never worse than one padded run (work as the rule counts it)
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = [int(x) for x in rng.integers(2, 256, size=int(rng.integers(1, 40)))]
        groups = length_groups(lengths, 16)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        work = sum(16 + len(g) * max(lengths[i] for i in g) for g in groups)
        assert work <= 16 + len(lengths) * max(lengths)
