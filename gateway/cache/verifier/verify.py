"""Hit verification: compare the *key slots* of the query and a candidate before serving it.

Similarity cannot tell "sort ascending" from "sort descending" (cosine 0.97+), so each
candidate above the category's threshold is checked slot by slot. A slot is a kind of content
whose change changes the answer; ordinary words may change freely (paraphrases). Rules are by
kind of difference, never lists of particular questions:

- numbers     values (with %, and number words) and the units next to them
- quoted      text in quotes or backticks
- identifiers code-like tokens: snake_case, camelCase, dotted.names, calls(), file.ext, --flags
- languages   programming languages, libraries, tools and platforms
- entities    proper nouns (capitalised mid-sentence), ALL-CAPS tickers/acronyms, currencies;
              and a content word put in place of another that is no synonym: in the same
              sentence word for word ("How tall is X?" / "How old is X?"), or, for lower-case
              text where proper nouns cannot be told by case, among the same content words
              ("apple stock" / "tesla stock")
- dates       months, weekdays, years, relative days and periods (today, last week, ...)
- contrast    opposite members of a contrast group (ascending/descending, buy/sell, GET/POST,
              first/second, when/where/why...)
- relations   the same words in another order around a direction word ("string to int" /
              "int to string", "a greater than b" / "b greater than a")
- negation    not / no / never / without present on one side only

Which kinds apply is data: each category lists them (``verification.slots``).
Extraction is in ``slots``, the vocabulary in ``lexicon``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.cache.verifier import lexicon as lx
from gateway.cache.verifier.slots import Slots, extract
from gateway.categories import ALL_SLOTS, SlotKind

__all__ = ["GATE_KINDS", "OK", "PARTS", "Verdict", "held_differ", "verify"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None  # the slot kind that differed, or "probability"
    probability: float | None = None  # the calibrated verifier's, where it judged


OK = Verdict(True)


def _both_and_differ(a: frozenset[str], b: frozenset[str]) -> bool:
    return bool(a) and bool(b) and a != b


def _contrast_differs(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return False
    groups = {g for w in a | b for g in lx.CONTRAST_INDEX.get(w, [])}
    for g in groups:
        ma = {w for w in a if g in lx.CONTRAST_INDEX.get(w, [])}
        mb = {w for w in b if g in lx.CONTRAST_INDEX.get(w, [])}
        if ma and mb and ma != mb:
            return True
    return False


def _numbers_differ(a: Slots, b: Slots) -> bool:
    return (
        a.numbers != b.numbers
        or _both_and_differ(a.target_units, b.target_units)
        or _both_and_differ(a.ops, b.ops)
    )


def _relations_differ(a: Slots, b: Slots) -> bool:
    """The same things in another order where order matters: around a direction word
    ("string to int" / "int to string"), or numbers of a non-commutative operation."""
    if (sorted(a.number_seq) == sorted(b.number_seq) and a.number_seq != b.number_seq
            and ((a.ops | b.ops) & lx.NON_COMMUTATIVE or a.relation_frames or b.relation_frames)):
        return True
    if sorted(a.content) != sorted(b.content) or a.content == b.content:
        return False
    common = {f[0] for f in a.relation_frames} & {f[0] for f in b.relation_frames}
    for d in common:
        fa = {f[1:] for f in a.relation_frames if f[0] == d and f[1] and f[2]}
        fb = {f[1:] for f in b.relation_frames if f[0] == d and f[1] and f[2]}
        if fa and fb and not fa & fb:
            return True
    return False


def _minimal_pair(a: Slots, b: Slots) -> bool:
    """One content word swapped for a non-synonym, all else equal: a changed slot. Only for
    text typed without capitals, where proper nouns cannot be told by their case."""
    if not (a.lower_case or b.lower_case):
        return False
    sa, sb = set(a.content), set(b.content)
    only_a, only_b = sa - sb, sb - sa
    return len(only_a) == 1 and len(only_b) == 1 and len(sa & sb) >= 1


def _frame_swap(a: Slots, b: Slots) -> bool:
    """The same sentence word for word except one or two content words put in place of
    others that are no synonyms ("How tall is X?" / "How old is X?", "a joke about cats" /
    "... dogs"): the same question asked about something else. A paraphrase rebuilds the
    sentence instead."""
    if len(a.sequence) != len(b.sequence):
        return False
    swaps = [(x, y) for x, y in zip(a.sequence, b.sequence, strict=True) if x != y]
    if not swaps or len(swaps) > 2 or (len(a.sequence) - len(swaps)) * 2 < len(a.sequence):
        return False
    return any(x not in lx.STOP and y not in lx.STOP and not _same_word(x, y) for x, y in swaps)


def _same_word(x: str, y: str) -> bool:
    """Equal, or one extends the other (spring / springtime, photo / photography)."""
    return x == y or (min(len(x), len(y)) >= 4 and (x.startswith(y) or y.startswith(x)))


def _topics_differ(a: Slots, b: Slots) -> bool:
    """The same preposition of topic ("a joke about ...") followed by different things."""
    for prep in {p for p, _ in a.topics} & {p for p, _ in b.topics}:
        ta = {w for p, w in a.topics if p == prep}
        tb = {w for p, w in b.topics if p == prep}
        if not any(_same_word(x, y) for x in ta for y in tb):
            return True
    return False


def substituted(a: Slots, b: Slots) -> bool:
    """A content word put in place of another that is no synonym, the rest kept: the part of
    ``entities`` that reads the sentence rather than its names."""
    return _minimal_pair(a, b) or _frame_swap(a, b) or _topics_differ(a, b)


def _entities_differ(a: Slots, b: Slots) -> bool:
    """An entity on one side that the other side does not mention at all, in any case or
    under another name of the same thing ("$" / "dollars"), or a word substituted.
    Code-like tokens (model numbers, part codes, ids) name things too."""
    if ((a.entities | a.identifiers) - b.words - b.entities
            or (b.entities | b.identifiers) - a.words - a.entities):
        return True
    return substituted(a, b)


# Most specific kinds first: the reason reported is the most telling one.
_ORDER: tuple[SlotKind, ...] = (
    "contrast", "relations", "negation", "numbers", "quoted", "identifiers", "languages",
    "dates", "entities",
)


# how each kind is compared, most specific kinds first in ``_ORDER``
_DIFFERS: dict[SlotKind, Callable[[Slots, Slots], bool]] = {
    "numbers": _numbers_differ,
    "quoted": lambda a, b: a.quoted != b.quoted,
    "identifiers": lambda a, b: a.identifiers != b.identifiers,
    "languages": lambda a, b: a.languages != b.languages,
    "entities": _entities_differ,
    "dates": lambda a, b: a.dates != b.dates,
    "contrast": lambda a, b: _contrast_differs(a.contrast, b.contrast),
    "relations": _relations_differ,
    "negation": lambda a, b: a.negation != b.negation,
}


def differences(a: Slots, b: Slots, kinds: tuple[SlotKind, ...] | list[SlotKind] = ALL_SLOTS,
                ) -> list[SlotKind]:
    """Every kind (of ``kinds``, most specific first) on which the two differ."""
    return [k for k in _ORDER if k in kinds and _DIFFERS[k](a, b)]


# Parts of a kind that the cross-encoder's gate can hold apart from the rest of the kind
# (``Gate.never_overruled``): the part's name, the kind it belongs to, and its test.
PARTS: dict[str, tuple[SlotKind, Callable[[Slots, Slots], bool]]] = {
    "substitution": ("entities", substituted),
}
GATE_KINDS: tuple[str, ...] = (*ALL_SLOTS, *PARTS)


def held_differ(a: Slots, b: Slots, kinds: tuple[SlotKind, ...] | list[SlotKind],
                held: tuple[str, ...] | list[str]) -> bool:
    """Whether one of ``held`` (slot kinds, or parts of one: ``PARTS``) differs, of the kinds a
    category checks (``kinds``)."""
    for name in held:
        kind, differs = PARTS[name] if name in PARTS else (name, _DIFFERS[name])
        if kind in kinds and differs(a, b):
            return True
    return False


def verify(
    query: str, candidate: str, kinds: list[SlotKind] | tuple[SlotKind, ...] = ALL_SLOTS
) -> Verdict:
    if query == candidate:
        return OK
    a, b = extract(query), extract(candidate)
    for kind in _ORDER:
        if kind in kinds and _DIFFERS[kind](a, b):
            return Verdict(False, kind)
    return OK
