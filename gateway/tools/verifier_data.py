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

import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gateway.tools.question_pairs import (
    _WH,
    Row,
    _row,
    mined_negatives,
    one_word_negatives,
    reparandum_negatives,
)

_WH_SWAP = {
    "what": ("who", "where", "when"), "who": ("what", "where", "when"),
    "when": ("where", "why", "how"), "where": ("when", "why", "how"),
    "why": ("how", "when", "where"), "how": ("why", "when", "where"),
    # not "what": "Which / What language is spoken in Brazil?" ask the same (run18 fixed a model
    # that had learned they differ from negatives this generator made so)
    "which": ("who", "when", "where"),
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


def read(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def trains_on(cfg: dict[str, Any], source: str, kind: str) -> bool:
    """Whether a training variant (``train_verifier``'s ``drop`` and ``keep``: sources, or
    ``source:kind``, comma-separated) learns from a source's pairs of a kind."""
    dropped = set(filter(None, cfg.get("drop", "").split(",")))
    kept = set(filter(None, cfg.get("keep", "").split(",")))
    return source not in dropped and (not kept or source in kept or f"{source}:{kind}" in kept)


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


# words after which a leading "what" / "which" is no determiner of a noun ("What is ...")
_NOT_A_NOUN = frozenset(
    "is are was were do does did has have had can could will would should may might must of "
    "to in on at for if about kind kinds sort type".split())


def _which_what(q: str) -> str | None:
    """A question opening with "What"/"Which" and a noun, asked with the other word: "Which
    language is spoken in Brazil?" / "What language ...". The same question (run18)."""
    words = q.split()
    if len(words) < 3 or words[1].lower() in _NOT_A_NOUN or not words[1].isalpha():
        return None
    other = {"what": "Which", "which": "What"}.get(words[0].lower())
    return " ".join([other, *words[1:]]) if other else None


def synthetic(questions: list[str], rng: random.Random, per_kind: int) -> list[Row]:
    """One-edit pairs from fluent questions: four kinds of changed meaning; typing variants,
    moved phrases and "what" / "which" before a noun, which keep it."""
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
    rows += [_row(q, b, True, "synthetic", "synthetic:which_what")  # last: the draws above
             for q, b in _first_made(questions, _which_what, rng, per_kind)]  # stay as they were
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
