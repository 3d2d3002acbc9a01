"""Slot extraction: the parts of a query whose change changes the answer (numbers, quoted text,
identifiers, languages, entities, dates, contrast words, relation frames, negation), each in a
canonical form so that paraphrases give the same slots. ``verify`` compares them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.cache.verifier import lexicon as lx

_TOKEN = re.compile(
    r"""
    (?P<quoted>"[^"]{1,200}"|`[^`]{1,200}`|(?<!\w)'[^']{1,200}'(?!\w))
  | (?P<money>[$€£¥]\s?\d[\d,]*(?:\.\d+)?\s?[kmb]?\b)
  | (?P<number>\d[\d,]*(?:\.\d+)?(?:\s?%)?)
  | (?P<word>[A-Za-z_][\w+#.\-/]*(?:\(\))?)
  | (?P<sym>[$€£¥%<>=+*/^×÷-])
    """,
    re.VERBOSE,
)


_VOWELS = frozenset("aeiou")


def _stem(w: str) -> str:
    for suf in ("ing", "ies", "es", "ed", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            stem = w[: -len(suf)] + ("y" if suf == "ies" else "")
            # the consonant doubled before -ing / -ed after one short vowel: getting -> get,
            # stopped -> stop, embedding -> embed (but adding -> add, calling -> call)
            if (suf in ("ing", "ed") and len(stem) >= 4 and stem[-1] == stem[-2]
                    and stem[-1] in "bdgmnprt" and stem[-3] in _VOWELS
                    and stem[-4] not in _VOWELS):
                return stem[:-1]
            return stem
    return w


def _canon(w: str) -> str:
    w = w.lower().rstrip(".")
    return lx.SYNONYMS.get(w) or lx.SYNONYMS.get(_stem(w)) or _stem(w)


def _num(text: str) -> str:
    text = text.replace(",", "").replace(" ", "")
    pct = text.endswith("%")
    value = float(text.rstrip("%"))
    s = f"{value:g}"
    return s + "%" if pct else s


def _contrast_keys(low: str) -> list[str]:
    return [k for k in dict.fromkeys((low, _stem(low), _canon(low))) if k in lx.CONTRAST_INDEX]


@dataclass(frozen=True)
class Slots:
    numbers: frozenset[str]           # values (15, 15%) and units attached to them (unit:km)
    number_seq: tuple[str, ...]       # the values in order
    target_units: frozenset[str]      # units named without a number ("... in meters")
    ops: frozenset[str]
    quoted: frozenset[str]
    identifiers: frozenset[str]
    languages: frozenset[str]
    entities: frozenset[str]
    dates: frozenset[str]
    contrast: frozenset[str]
    negation: bool
    content: tuple[str, ...]          # canonical content words, in order
    relation_frames: frozenset[tuple[str, str, str]]  # (direction word, word before, word after)
    topics: frozenset[tuple[str, str]]  # (about/of/on, the word after it)
    words: frozenset[str]             # every word, lower case, and its stem
    sequence: tuple[str, ...]         # every word in order, canonical (synonyms as one)
    lower_case: bool


def _is_identifier(tok: str) -> bool:
    core = tok.rstrip(".")
    return bool(
        "_" in core.strip("_") or core.endswith("()") or core.startswith("--")
        or re.search(r"[a-z][A-Z]", core)
        or re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", core)
    )


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, end offset); plain hyphenated words are split ("two-day" -> two, day)."""
    out: list[tuple[str, str, int]] = []
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup or "", m.group()
        if (kind == "word" and "-" in tok.strip("-") and not _is_identifier(tok)
                and tok.lower() not in lx.TECH):
            for part in tok.split("-"):
                if part:
                    out.append(("word", part, m.end()))
        else:
            out.append((kind, tok, m.end()))
    return out


_AMBIGUOUS_TECH = frozenset(
    "c r go rest spring express apache spark excel mac sh ts py js torch node".split()
)


_NEXT_WORD = re.compile(r"\s*(,?)\s*([A-Za-z']*)")


def _negates(low: str, before: str, rest: str) -> bool:
    """A negation word that negates. Not: the question tag "or not" ("whether or not", "... or
    not?"), and "no" as an interjection — a speaker correcting themselves ("no sorry", "no, make
    that", "oh no", "Irena Bajerska no Zbigniew Marek"): followed by a comma, a word of repair, a
    question word or an article, or following one of repair, or between two names."""
    if low == "not" and before.lower() == "or":
        return False
    if low == "no":
        m = _NEXT_WORD.match(rest)
        comma, nxt = (m.group(1), m.group(2)) if m else ("", "")
        if comma or nxt.lower() in lx.REPAIR_AFTER or before.lower() in lx.REPAIR_BEFORE:
            return False
        if before[:1].isupper() and nxt[:1].isupper():
            return False
    return True


@lru_cache(maxsize=4096)  # hot stored queries are re-verified often; bounded memory
def extract(text: str) -> Slots:
    numbers: set[str] = set()
    number_seq: list[str] = []
    target_units: set[str] = set()
    ops: set[str] = set()
    quoted: set[str] = set()
    idents: set[str] = set()
    langs: set[str] = set()
    ents: set[str] = set()
    dates: set[str] = set()
    contrast: set[str] = set()
    negation = False
    content: list[str] = []
    words: list[str] = []
    sentence_start = True
    prev_kind, prev_word = "", ""
    last_word = ""  # the word before this one, whatever it was
    contraction = False  # the "t" of "n't" comes next
    for kind, tok, end in _tokens(text):
        if kind == "quoted":
            quoted.add(tok[1:-1].strip().lower())
            sentence_start, prev_kind = False, kind
            continue
        if kind == "money":
            ents.add("usd" if tok[0] == "$" else lx.CURRENCIES.get(tok[0], tok[0]))
            value = _num(re.sub(r"[^\d.,]", "", tok))
            numbers.add(value)
            number_seq.append(value)
            prev_kind = "number"
            continue
        if kind == "number":
            value = _num(tok)
            nxt = text[end : end + 16].lower().replace("-", " ").split()
            if nxt and nxt[0].strip(".,?") in lx.PERCENT_WORDS and not value.endswith("%"):
                value += "%"
            numbers.add(value)
            number_seq.append(value)
            if len(tok) == 4 and tok.isdigit() and 1000 <= int(tok) <= 2999:
                dates.add(tok)
            content.append(value)
            words.append(value)
            sentence_start, prev_kind = False, "number"
            continue
        if kind == "sym":
            if tok in "$€£¥":
                ents.add(lx.CURRENCIES[tok])
            elif tok in lx.OPS:
                ops.add(lx.OPS[tok])
            continue
        word = tok.rstrip(".")
        low = word.lower()
        if contraction and low == "t":  # "doesn't" arrives as "doesn", "t"
            contraction = False
            sentence_start = tok.endswith(".")
            continue
        contraction = low.endswith("n") and text[end:end + 2] in ("'t", "’t")
        if contraction:
            low = low + "'t"
        before, last_word = last_word, word
        words.append(low)
        at_start = sentence_start
        sentence_start = tok.endswith(".") and not _is_identifier(tok)
        after_number = prev_kind == "number"
        prev_kind = "word"
        if low in lx.NEGATION or low.endswith("n't"):
            negation = negation or _negates(low, before, text[end:])
            continue
        if low in lx.OPS and not (low in ("add", "equal") and not numbers):
            ops.add(lx.OPS[low])
        if low in lx.NUMBER_WORDS:
            value = f"{lx.NUMBER_WORDS[low]:g}"
            numbers.add(value)
            number_seq.append(value)
            content.append(value)
            prev_kind = "number"
            continue
        if low in lx.PERCENT_WORDS:
            continue
        # a unit without a number counts only where something is measured ("how many feet
        # in a mile", "... to km"), not in "set foot" or "the second person"
        if low in lx.UNITS and (after_number or (len(words) > 1
                                                 and words[-2] in lx.MEASURE_CONTEXT)):
            unit = "unit:" + lx.UNITS[low]
            (numbers if after_number else target_units).add(unit)
            content.append(unit)
            continue
        if _is_identifier(tok):
            idents.add(low)
            content.append(low)
            continue
        if low in lx.TECH and (low not in _AMBIGUOUS_TECH or word != low
                             or prev_word in ("in", "with", "using", "for")):
            langs.add(lx.TECH[low])
            content.append(lx.TECH[low])
            prev_word = low
            continue
        if low in lx.CURRENCIES:
            ents.add(lx.CURRENCIES[low])
            content.append(lx.CURRENCIES[low])
            continue
        if low in lx.DATE_WORDS:
            dates.add(low[:3] if low[:3] in lx.MONTHS else low)
        keys = _contrast_keys(low)
        contrast.update(keys)
        is_upper = word.isupper() and len(word) >= 2 and word.isalpha()
        capital = word[0].isupper() and not at_start and low not in lx.STOP and low != "i"
        if (is_upper or capital) and not keys and low not in lx.GENERIC:
            ents.add(low)
        prev_word = low
        if low not in lx.STOP and low not in lx.GENERIC:
            content.append(_canon(low))

    canon_words = [
        w if w in lx.DIRECTION or w in lx.TOPIC else "unit:" + lx.UNITS[w] if w in lx.UNITS else _canon(w)
        for w in words
    ]

    def salient(xs: list[str]) -> str:
        return next((x for x in xs if x not in lx.STOP and x not in lx.DIRECTION
                     and x not in lx.TOPIC and x not in lx.GENERIC), "")

    frames, topics = set(), set()
    for i, w in enumerate(canon_words):
        if w in lx.DIRECTION:
            before, after = salient(canon_words[:i][::-1]), salient(canon_words[i + 1 :])
            frames.add(("to" if w in ("into", "onto", "toward", "towards") else w, before, after))
        elif w in lx.TOPIC and (after := salient(canon_words[i + 1 :])):
            topics.add((w, after))
    letters = [c for c in text if c.isalpha()]
    return Slots(
        numbers=frozenset(numbers), number_seq=tuple(number_seq),
        target_units=frozenset(target_units), ops=frozenset(ops), quoted=frozenset(quoted),
        identifiers=frozenset(idents), languages=frozenset(langs), entities=frozenset(ents),
        dates=frozenset(dates), contrast=frozenset(contrast), negation=negation,
        content=tuple(content), relation_frames=frozenset(frames), topics=frozenset(topics),
        words=frozenset(words) | frozenset(_stem(w) for w in words),
        sequence=tuple(canon_words),
        lower_case=bool(letters) and not any(c.isupper() for c in letters),
    )
