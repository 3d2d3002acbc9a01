"""CategoryIndex: a label always stands for the vector last added under it."""

from __future__ import annotations

import numpy as np

from gateway.cache.index import CategoryIndex, Meta

META = Meta("scope", "", float("inf"))


def _vec(i: int, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def test_a_reused_label_never_unmaps_a_live_one() -> None:
    """The issue-16 sequence: ids 1, 2 deleted, added again, deleted, then 1 once more. Before,
    hnswlib's slot replacement forgot live label 1 ("Label not found" on delete)."""
    ix = CategoryIndex(8, capacity=4)
    ix.add([1, 2], np.stack([_vec(0), _vec(1)]), [META, META])
    ix.remove([1, 2])
    ix.add([1], _vec(2), [META])
    ix.add([2], _vec(3), [META])
    assert np.allclose(ix._index.get_items([1, 2]), np.stack([_vec(2), _vec(3)]))
    ix.remove([1, 2])
    ix.add([1], _vec(4), [META])
    assert np.allclose(ix._index.get_items([1])[0], _vec(4))
    assert ix.search(_vec(4), k=1, scope_hash="scope", context_hash="", now=0) == [(1, 1.0)]
    assert ix.remove([1]) == 1
    assert ix.search(_vec(4), k=1, scope_hash="scope", context_hash="", now=0) == []


def test_re_adding_a_live_label_updates_it_in_place() -> None:
    ix = CategoryIndex(8, capacity=4)
    ix.add([1, 2], np.stack([_vec(0), _vec(1)]), [META, META])
    ix.remove([2])  # a free slot that a second copy of label 1 could have taken
    ix.add([1], _vec(5), [META])
    assert sorted(ix._index.get_ids_list()) == [1, 2]
    assert ix.remove([1]) == 1
    assert ix.search(_vec(5), k=2, scope_hash="scope", context_hash="", now=0) == []


def test_free_slots_are_reused_without_growing() -> None:
    ix = CategoryIndex(8, capacity=4)
    for label in range(1, 200):
        ix.add([label], _vec(label % 8), [META])
        ix.remove([label])
    assert ix._index.get_max_elements() == 4
