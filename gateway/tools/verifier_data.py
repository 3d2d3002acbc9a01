"""Training and evaluation pairs for the learned verifier, built reproducibly from the public
pairs in ``../shared/data/pairs/`` (see its README for sources and licences).

What goes where (a split used here for training is never used to judge the verifier):

- **train / calib** (the verifier learns on *train*; its calibration — the logistic model that
  turns the cross-encoder's score and the cosine into a probability — is fitted on *calib*, a
  seeded 15% of the same sources that the cross-encoder never sees):
  PAWS-Wiki ``dev``; STS-B ``train``; Disfl-QA ``train`` positives; *mined* Disfl-QA negatives
  (two different SQuAD questions of the train split that are near neighbours by embedding:
  mostly different questions about one topic — not human labels, marked ``mined``); *synthetic*
  one-edit pairs made from Disfl-QA train questions (``synthetic:<kind>``): a different number,
  question word, entity or an added negation (negatives), typing variants — case,
  punctuation, contractions, a polite prefix — and a closing phrase moved to the front ("… in
  1361?" → "In 1361, …?") (positives); the project's generated dev set.
- **held aside, never trained or tuned on**: PAWS-Wiki ``test``, STS-B ``dev``+``test``,
  Disfl-QA ``dev``+``test`` (positives, with negatives mined the same way inside those splits),
  StackFAQ (both splits: its README allows tuning and evaluation only, never training of anything
  shipped), and the project's two hand-written held-out sets.
"""

from __future__ import annotations

import difflib
import itertools
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]

# a mined neighbour this close is too often the same question asked twice by two annotators
MINED_MAX_COSINE = 0.93
MINED_MIN_COSINE = 0.55

_WH = ("what", "who", "when", "where", "why", "how", "which")
_WH_SWAP = {
    "what": ("who", "where", "when"), "who": ("what", "where", "when"),
    "when": ("where", "why", "how"), "where": ("when", "why", "how"),
    "why": ("how", "when", "where"), "how": ("why", "when", "where"),
    "which": ("what", "who", "where"),
}
_NEGATE = (("is", "is not"), ("was", "was not"), ("are", "are not"), ("were", "were not"),
           ("did", "did not"), ("does", "does not"), ("do", "do not"), ("can", "cannot"),
           ("could", "could not"), ("will", "will not"), ("has", "has not"), ("should", "should not"))
_CONTRACT = (("what is", "what's"), ("do not", "don't"), ("does not", "doesn't"),
             ("is not", "isn't"), ("can not", "can't"), ("it is", "it's"), ("who is", "who's"),
             ("where is", "where's"), ("how is", "how's"))
_PREFIX = ("Can you tell me ", "I'd like to know ", "Please tell me ", "Do you know ",
           "Quick question: ", "I was wondering ")
# a closing place or time phrase, which can open the question instead: "... plague in 1361?"
_CLOSING = re.compile(r"^(?P<head>(?:\S+\s+){3,}\S+)\s+(?P<phrase>(?:in|at|during|since|before|after)"
                      r"\s+(?:\S+\s+){0,3}\S+?)\s*\?$")
_VERBS = frozenset("is are was were be been did do does has have had can could will would "
                   "should may might must".split())
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_CAPITAL = re.compile(r"(?<=\w\s)([A-Z][a-z]{2,})\b")
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


def read(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _row(a: str, b: str, same: bool, source: str, kind: str) -> Row:
    return {"a": a, "b": b, "same": bool(same), "source": source, "kind": kind}


def _case(text: str, first: str) -> str:
    return first + text[len(first):] if text else text


def _number_swap(q: str, rng: random.Random) -> str | None:
    found = _NUMBER.findall(q)
    if not found:
        return None
    old = rng.choice(found)
    digits = old.replace(",", "")
    try:
        value = float(digits)
    except ValueError:
        return None
    year = 1900 <= value <= 2100
    new = value + rng.choice((-7, -3, 4, 9) if year else (1, 2, 3, 5, 10, 100))
    text = str(int(new)) if float(new).is_integer() else f"{new:g}"
    return q.replace(old, text, 1)


def _wh_swap(q: str, rng: random.Random) -> str | None:
    words = q.split()
    for i, w in enumerate(words):
        lw = w.lower()
        if lw in _WH:
            new = rng.choice(_WH_SWAP[lw])
            words[i] = new.capitalize() if w[0].isupper() else new
            return " ".join(words)
    return None


def _negate(q: str, rng: random.Random) -> str | None:
    words = q.split()
    for i, w in enumerate(words[:4]):
        for old, new in _NEGATE:
            if w.lower() == old:
                words[i] = _case(new, w[0]) if w[0].isupper() else new
                return " ".join(words)
    return None


def _entity_swap(q: str, others: list[str], rng: random.Random) -> str | None:
    mine = _CAPITAL.findall(q)
    if not mine:
        return None
    pool = [e for e in others if e not in q]
    if not pool:
        return None
    return q.replace(rng.choice(mine), rng.choice(pool), 1)


def _typing_variant(q: str, rng: random.Random) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return q.lower().rstrip("?").strip()
    if choice == 1:
        out = q
        for long, short in _CONTRACT:
            out = re.sub(rf"\b{long}\b", short, out, flags=re.IGNORECASE)
        return out if out != q else q.rstrip("?") + " ?"
    if choice == 2:
        return rng.choice(_PREFIX) + q[0].lower() + q[1:]
    return q.rstrip("?. ")


def _moved_phrase(q: str) -> str | None:
    """"What ... of the plague in 1361?" -> "In 1361, what ... of the plague?" (same meaning)."""
    m = _CLOSING.match(q.strip())
    if not m:
        return None
    head, phrase = m["head"], m["phrase"]
    words, pwords = head.split(), phrase.split()
    # a phrase with a verb in it is a clause ("in the tropics were civilized"): left alone
    if any(w in _WH or w in _VERBS for w in phrase.lower().split()):
        return None
    if not (pwords[-1][0].isupper() or pwords[-1][0].isdigit()):  # a place or a time: "in Japan"
        return None
    if words[0].lower() not in _WH or not head[-1].isalnum():  # plain wh-questions only
        return None
    if words[-1][0].isupper() and pwords[1][0].isupper():
        return None  # part of a name: "the Nobel Prize in Economic Sciences"
    if any(w in _WH or w == "that" for w in head.lower().split()[1:]):  # a relative clause's
        return None
    if words[-1].lower() in _VERBS or pwords[1].endswith("ing"):
        return None  # "... swimming pool is at X?", "... involved in assassinating X?"
    return f"{phrase[0].upper()}{phrase[1:]}, {head[0].lower()}{head[1:]}?"


def _first_made(questions: list[str], make: Callable[[str], str | None], rng: random.Random,
                limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (question, made) pairs, questions taken in a seeded random order."""
    made: list[tuple[str, str]] = []
    for q in rng.sample(questions, len(questions)):
        b = make(q)
        if b and b != q:
            made.append((q, b))
            if len(made) >= limit:
                break
    return made


def synthetic(questions: list[str], rng: random.Random, per_kind: int) -> list[Row]:
    """One-edit pairs from fluent questions: four kinds of changed meaning; typing variants and
    moved phrases, which keep it."""
    capitals = sorted({e for q in questions for e in _CAPITAL.findall(q)})
    rows: list[Row] = []
    makers: dict[str, Callable[[str], str | None]] = {
        "number": lambda q: _number_swap(q, rng),
        "question_word": lambda q: _wh_swap(q, rng),
        "negation": lambda q: _negate(q, rng),
        "entity": lambda q: _entity_swap(q, capitals, rng),
    }
    for kind, make in makers.items():
        rows += [_row(q, b, False, "synthetic", f"synthetic:{kind}")
                 for q, b in _first_made(questions, make, rng, per_kind)]
    for q in rng.sample(questions, min(len(questions), per_kind * 2)):
        b = _typing_variant(q, rng)
        if b != q:
            rows.append(_row(q, b, True, "synthetic", "synthetic:typing"))
    rows += [_row(q, b, True, "synthetic", "synthetic:moved")
             for q, b in _first_made(questions, _moved_phrase, rng, per_kind)]
    return rows


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
            slots.setdefault((len(words), i, *words[:i], None, *words[i + 1:]), []).append(
                (text, qid, w))
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


def _pick(rows: Iterable[Row], **match: Any) -> Iterator[Row]:
    for r in rows:
        if all(r.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in match.items()):
            yield r


def build(
    pairs_dir: Path, dev_set: Path | None, encode: Callable[[list[str]], np.ndarray],
    seed: int = 13, probe: Path | None = None,
) -> dict[str, list[Row]]:
    """{"train": [...], "calib": [...], "<held-out set>": [...]} — every row a pair. *probe*:
    hand-written pairs (an attribute swapped: "capital" / "largest city"), only ever measured."""
    rng = random.Random(seed)
    paws = read(pairs_dir / "paws_wiki.jsonl")
    stsb = read(pairs_dir / "stsb.jsonl")
    disfl = read(pairs_dir / "disflqa.jsonl")
    stack = read(pairs_dir / "stackfaq.jsonl")

    pool: list[Row] = []
    pool += [_row(r["a"], r["b"], r["same"], "paws_wiki", "human") for r in _pick(paws, split="dev")]
    pool += [_row(r["a"], r["b"], r["same"], "stsb", "human") for r in _pick(stsb, split="train")]
    disfl_train = list(_pick(disfl, split="train"))
    pool += [_row(r["a"], r["b"], True, "disflqa", "human")
             for r in rng.sample(disfl_train, min(4000, len(disfl_train)))]
    train_q = sorted({(r["a"], r["meta"]["squad_v2_id"]) for r in disfl_train})
    pool += mined_negatives(train_q, encode, rng, limit=5000)
    pool += reparandum_negatives(disfl_train, rng, limit=2500)
    pool += synthetic(sorted({q for q, _ in train_q}), rng, per_kind=1200)
    if dev_set is not None and dev_set.exists():
        pool += [_row(r["a"], r["b"], r["same"], "project_dev", "generated") for r in read(dev_set)]
    rng.shuffle(pool)
    cut = int(len(pool) * 0.15)
    # split on their own, so that the other sources' train / calib split is the one the shipped
    # model was trained and fitted on (run14 trained on a split that had them in the pool)
    one_word = one_word_negatives(train_q, random.Random(seed + 4), limit=1000)
    one_cut = int(len(one_word) * 0.15)

    held: dict[str, list[Row]] = {
        "paws_wiki_test": [_row(r["a"], r["b"], r["same"], "paws_wiki", "human")
                           for r in _pick(paws, split="test")],
        "stsb_devtest": [_row(r["a"], r["b"], r["same"], "stsb", "human")
                         for r in _pick(stsb, split=("dev", "test"))],
        "stackfaq_dev": [_row(r["a"], r["b"], r["same"], "stackfaq", r["meta"]["kind"])
                         for r in _pick(stack, split="dev")],
        "stackfaq_train": [_row(r["a"], r["b"], r["same"], "stackfaq", r["meta"]["kind"])
                           for r in _pick(stack, split="train")],
    }
    disfl_held = list(_pick(disfl, split=("dev", "test")))
    held_q = sorted({(r["a"], r["meta"]["squad_v2_id"]) for r in disfl_held})
    held["disflqa_devtest"] = (
        [_row(r["a"], r["b"], True, "disflqa", "human") for r in disfl_held[:3000]]
        + mined_negatives(held_q, encode, random.Random(seed + 1), limit=3000)
    )
    held["disflqa_reparandum_devtest"] = (
        [_row(r["a"], r["b"], True, "disflqa", "human") for r in disfl_held[3000:4500]]
        + reparandum_negatives(disfl_held, random.Random(seed + 2), limit=1500)
    )
    held_one_word = one_word_negatives(held_q, random.Random(seed + 3), limit=1500)
    held["disflqa_one_word_devtest"] = (
        [_row(r["a"], r["b"], True, "disflqa", "human") for r in disfl_held[:len(held_one_word)]]
        + held_one_word)
    if probe is not None and probe.exists():
        held["probe_attributes"] = [_row(r["a"], r["b"], r["same"], "probe", r["kind"])
                                    for r in read(probe)]
    return {"train": pool[cut:] + one_word[one_cut:], "calib": pool[:cut] + one_word[:one_cut],
            **held}


def write(sets: dict[str, list[Row]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    import argparse

    from gateway.config import Settings
    from gateway.embedding import load_embedder

    ap = argparse.ArgumentParser(description="Write the learned verifier's training sets.")
    ap.add_argument("--pairs", type=Path, default=Path("../shared/data/pairs"))
    ap.add_argument("--dev-set", type=Path, default=Path("benchmarks/data/dev_pairs.jsonl"))
    ap.add_argument("--probe", type=Path,
                    default=Path("benchmarks/data/probe_attribute_pairs.jsonl"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    embedder = load_embedder(None, "cpu", "auto", Settings().embedding_cache_dir)
    write(build(args.pairs, args.dev_set, embedder.encode, args.seed, args.probe), args.out)


if __name__ == "__main__":
    main()
