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


def test_many_labels_deleted_and_added_again_in_any_order_keep_their_vectors() -> None:
    """Whichever free slot hnswlib hands out (its free list is unordered), every label ends up
    with its own vector and can be removed."""
    import random

    dim, rng = 16, random.Random(7)
    ix = CategoryIndex(dim, capacity=8)
    vec = {i: np.eye(dim, dtype=np.float32)[i % dim] * (1 + i // dim) for i in range(1, 13)}
    for i in vec:
        vec[i] = vec[i] / np.linalg.norm(vec[i])
    labels = list(vec)
    ix.add(labels, np.stack([vec[i] for i in labels]), [META] * len(labels))
    for _ in range(5):
        gone = rng.sample(labels, 6)
        ix.remove(gone)
        rng.shuffle(gone)
        for i in gone:  # one at a time: each takes some free slot
            ix.add([i], vec[i], [META])
        for i in labels:
            assert np.allclose(ix._index.get_items([i])[0], vec[i]), i
        # and no slot is left behind under a label: the graph holds just these twelve
        assert ix._index.element_count == len(labels)
    assert ix.remove(labels) == len(labels)


def test_search_keeps_only_the_same_scope_context_and_live_entries() -> None:
    ix = CategoryIndex(8, capacity=4)
    v = _vec(0)
    ix.add([1, 2, 3, 4, 5], np.stack([v] * 5), [
        Meta("scope", "", 100.0), Meta("other", "", 100.0), Meta("scope", "ctx", 100.0),
        Meta("scope", "", 10.0), Meta("scope", "", 50.0)])
    found = ix.search(v, k=5, scope_hash="scope", context_hash="", now=20.0)
    assert sorted(i for i, _ in found) == [1, 5]
    assert [i for i, _ in ix.search(v, k=5, scope_hash="scope", context_hash="ctx", now=20.0)] \
        == [3]
    assert ix.search(v, k=5, scope_hash="scope", context_hash="", now=100.0) == []


def test_similarity_is_the_cosine() -> None:
    ix = CategoryIndex(8, capacity=4)
    ix.add([1], _vec(0), [META])
    q = (0.6 * _vec(0) + 0.8 * _vec(1)).astype(np.float32)
    ((label, sim),) = ix.search(q, k=1, scope_hash="scope", context_hash="", now=0)
    assert label == 1 and abs(sim - 0.6) < 1e-5


def test_the_index_grows_past_its_capacity() -> None:
    ix = CategoryIndex(8, capacity=4)
    n = 3000
    vecs = np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for start in range(0, n, 500):
        ix.add(list(range(start + 1, start + 501)), vecs[start:start + 500], [META] * 500)
    assert len(ix) == n and ix._index.get_max_elements() >= n
    for i in (1, 1500, 3000):
        assert ix.search(vecs[i - 1], k=1, scope_hash="scope", context_hash="", now=0)[0][0] == i



def test_another_scopes_nearer_crowd_neither_leaks_nor_hides_this_scopes_entries() -> None:
    """The search looks at a few more than k unfiltered first; where another scope's entries
    fill all of those, the filtered search must still find this scope's own, farther ones."""
    rng = np.random.default_rng(7)
    dim = 16
    query = _vec(0, dim)
    crowd = query + 0.05 * rng.normal(size=(200, dim))      # other tenants, very near
    own = query + 0.6 * rng.normal(size=(3, dim))            # ours, farther
    vecs = np.vstack([crowd, own]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ix = CategoryIndex(dim, capacity=8)
    ids = list(range(1, 204))
    ix.add(ids, vecs, [Meta("other", "", 100.0)] * 200 + [Meta("scope", "", 100.0)] * 3)
    found = ix.search(query, k=5, scope_hash="scope", context_hash="", now=0.0)
    assert sorted(i for i, _ in found) == [201, 202, 203]
    sims = [s for _, s in found]
    assert sims == sorted(sims, reverse=True)
    # and where enough of the nearest are ours, those come back, best first, none of theirs
    mixed = ix.search(query, k=5, scope_hash="other", context_hash="", now=0.0)
    assert len(mixed) == 5 and all(i <= 200 for i, _ in mixed)
    exact = sorted(((i, float(vecs[i - 1] @ query)) for i in range(1, 201)),
                   key=lambda x: -x[1])[:5]
    assert [i for i, _ in mixed] == [i for i, _ in exact]
