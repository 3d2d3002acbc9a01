"""Pairs made from real questions for the learned verifier's sets (``verifier_data``): negatives
two annotators or a speaker made — a near neighbour with another answer (``mined``), the question
a disfluent speaker took back (``reparandum``), two questions with different answers one word
apart (``one_word``). Not human labels of the pairs: each kind's noise is in its docstring."""

from __future__ import annotations

import difflib
import itertools
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

Row = dict[str, Any]

# a mined neighbour this close is too often the same question asked twice by two annotators
MINED_MAX_COSINE = 0.93
MINED_MIN_COSINE = 0.55

_WH = ("what", "who", "when", "where", "why", "how", "which")
# a disfluent question's interregnum: what a speaker says between the words taken back and the
# repair ("... Poland *no make that* Warsaw")
_TOKEN = re.compile(r"[\w'’-]+|[^\w\s]")
_INTERREGNUM = sorted((tuple(p.split()) for p in (
    "no", "sorry", "uh", "uhh", "um", "umm", "er", "err", "erm", "errm", "errmm", "ah", "oh", "hmm",
    "like", "well", "i mean", "i meant", "i meant to say", "i mean to say", "make that",
    "scratch that", "rather", "or rather", "wait", "no wait", "actually", "that's not right",
    "correction", "no correction", "instead", "or", "or no", "no sorry", "sorry no", "no no",
    "uh i mean", "what i mean is", "let me rephrase", "let me correct myself", "oops", "whoops",
    "my bad", "not", "i'm sorry", "excuse me", "make it", "change that to", "i should say",
    "pardon me", "um no")), key=len, reverse=True)
_FILLERS = frozenset(w for p in _INTERREGNUM for w in p if w not in ("not", "like", "well", "or"))
_OPENERS = frozenset((*_WH, "whom", "whose", "in", "is", "are", "was", "were", "did", "do", "does"))


def _row(a: str, b: str, same: bool, source: str, kind: str) -> Row:
    return {"a": a, "b": b, "same": bool(same), "source": source, "kind": kind}


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _reparandum_question(fluent: str, disfluent: str) -> str | None:
    """The question a disfluent speaker began to ask before the correction, when the disfluency
    is a plain correction inside the question: "What is the median temperature in the summer uh
    winter?" for "What is the median temperature in the winter?" gives "... in the summer?".
    The speaker took those words back, so it asks something else; a word-for-word replacement of
    as many words as were taken back (a whole name), else None."""
    ta, tb = _tokens(fluent), _tokens(disfluent)
    wa, wb = [t for t, _, _ in ta], [t for t, _, _ in tb]
    edits = [o for o in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes()
             if o[0] != "equal"]
    if len(edits) != 1 or edits[0][0] != "insert":
        return None
    _, at, _, j1, j2 = edits[0]
    inserted, k = wb[j1:j2], j2 - j1
    while True:  # the interregnum closes the inserted words
        cut = next((len(p) for p in _INTERREGNUM if k >= len(p) and tuple(inserted[k - len(p):k]) == p), 0)
        if not cut:
            break
        k -= cut
    taken_back = inserted[:k]
    if (k == j2 - j1 or not taken_back or at == 0 or len(taken_back) > 4
            or (taken_back[0] in _OPENERS and len(taken_back) > 1)
            or any(w in _FILLERS for w in taken_back) or len(wa) - at <= len(taken_back)):
        return None
    end = at + len(taken_back)
    # a name is replaced whole: "Iraq" takes the place of "the Islamic State", not of "the"
    while end < len(ta) - 1 and fluent[ta[end][1]].isupper() and (
            fluent[ta[end - 1][1]].isupper() or wa[end - 1] == "the"):
        end += 1
    replaced = wa[at:end]
    if (replaced == taken_back or any(not w[0].isalnum() for w in replaced)
            or any(w in _WH for w in replaced + taken_back)):  # "what" / "which": often one question
        return None
    said = disfluent[tb[j1][1]:tb[j1 + len(taken_back) - 1][2]]
    made = fluent[:ta[at][1]] + said + fluent[ta[end - 1][2]:]
    words = [t for t, _, _ in _tokens(made)]
    if any(x == y for x, y in itertools.pairwise(words)):
        return None  # "... the the ..."
    return made[0].upper() + made[1:]


def reparandum_negatives(rows: Iterable[Row], rng: random.Random, limit: int) -> list[Row]:
    """Disfl-QA's disfluent questions correct themselves ("... in Poland no make that in
    Warsaw?"): the words taken back, put in the place of the repair, make a question one or two
    words away that asks something else — another attribute, entity, date or verb of the same
    frame, written by the annotator, not by a rule's list. Marked ``reparandum``: derived from
    human text, not a human label of the pair. 60 of the train split's, read by eye: 45 clean
    different questions, 10 different but clumsy ("Why did Henry David Thoreau of Anarchy?"),
    3 to 5 near-synonyms labelled different ("issue" / "problem", "promote" / "publicize")."""
    made = [(r["a"], q) for r in rows if (q := _reparandum_question(r["a"], r["b"]))]
    return [_row(a, q, False, "disflqa", "reparandum")
            for a, q in rng.sample(made, min(limit, len(made)))]


def one_word_negatives(questions: list[tuple[str, str]], rng: random.Random, limit: int
                       ) -> list[Row]:
    """For (text, squad_id) questions: pairs of two questions with different ids whose words
    differ in one place only ("Who ordered Loudoun to defend Louisbourg?" / "... to attack
    Louisbourg?"). SQuAD 2.0's annotators wrote its unanswerable questions by such edits to an
    answerable one — an antonym, another entity, a negation — so each pair is two questions
    people wrote that ask different things, one common word apart: the swap a model trained
    on rewordings takes for the same request. Marked ``one_word``: two human questions, not a
    human label of the pair; a difference of case alone is not a pair."""
    slots: dict[tuple[Any, ...], list[tuple[str, str, str]]] = {}
    for text, qid in questions:
        words = [t for t, _, _ in _tokens(text)]
        for i, w in enumerate(words):
            slots.setdefault((*words[:i], None, *words[i + 1:]), []).append((text, qid, w))
    made = sorted({(a, b) for group in slots.values() if len(group) > 1
                   for (a, ia, wa), (b, ib, wb) in itertools.combinations(group, 2)
                   if ia != ib and wa != wb})
    return [_row(a, b, False, "disflqa", "one_word")
            for a, b in rng.sample(made, min(limit, len(made)))]


def mined_negatives(
    questions: list[tuple[str, str]], encode: Callable[[list[str]], np.ndarray],
    rng: random.Random, limit: int,
) -> list[Row]:
    """For (text, squad_id) questions: each one's nearest question with another id, when its
    cosine lies in [MINED_MIN_COSINE, MINED_MAX_COSINE] and the texts differ."""
    texts = [t for t, _ in questions]
    vecs = np.concatenate([encode(texts[i:i + 512]) for i in range(0, len(texts), 512)])
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    order = rng.sample(range(len(texts)), len(texts))
    for i in order:
        sims = vecs @ vecs[i]
        sims[i] = -1
        for j in np.argsort(-sims)[:5]:
            s = float(sims[j])
            if questions[j][1] == questions[i][1] or texts[j].lower() == texts[i].lower():
                continue
            if not MINED_MIN_COSINE <= s <= MINED_MAX_COSINE:
                continue
            key = (min(texts[i], texts[j]), max(texts[i], texts[j]))
            if key not in seen:
                seen.add(key)
                rows.append(_row(texts[i], texts[j], False, "disflqa", "mined"))
            break
        if len(rows) >= limit:
            break
    return rows
