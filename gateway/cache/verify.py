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
              and, for lower-case text, a single substituted content word that is no synonym
              (a minimal pair: "apple stock" / "tesla stock")
- dates       months, weekdays, years, relative days and periods (today, last week, ...)
- contrast    opposite members of a contrast group (ascending/descending, buy/sell, GET/POST...)
- relations   the same words in another order around a direction word ("string to int" /
              "int to string", "a greater than b" / "b greater than a")
- negation    not / no / never / without present on one side only

Which kinds apply is data: each category lists them (``verification.slots``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.categories import ALL_SLOTS, SlotKind

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

_STOP = frozenset(
    """a an the of in on at for to from by with about as into onto over under is are was were be
    been being am do does did doing done can could would should will shall may might must i me my
    we our you your it its this that these those there here what which who whom whose when where
    why how please tell show give explain help want need like just some any all each every one
    way and or but so if then than also very really quite much many get got make made using use
    used via per vs versus let lets let's know i'm i'd im whats what's hows how's is it's it is
    ok okay hey hi hello thanks thank someone something can't cannot could you would you
    """.split()
)

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "half": 0.5, "quarter": 0.25,
    "twice": 2, "double": 2, "triple": 3, "dozen": 12,
}
_PERCENT_WORDS = frozenset({"percent", "percentage", "pct"})

# Units: each alias maps to one canonical name.
_UNITS = {
    alias: canon
    for canon, aliases in {
        "km": "km kms kilometer kilometers kilometre kilometres",
        "m": "meter meters metre metres",
        "cm": "cm centimeter centimeters",
        "mm": "mm millimeter millimeters",
        "mi": "mi mile miles",
        "ft": "ft foot feet",
        "in": "inch inches",
        "kg": "kg kgs kilogram kilograms kilo kilos",
        "g": "gram grams",
        "lb": "lb lbs pound-weight pounds-weight",
        "oz": "oz ounce ounces",
        "l": "liter liters litre litres",
        "ml": "ml milliliter milliliters",
        "gal": "gallon gallons",
        "c": "celsius centigrade",
        "f": "fahrenheit",
        "s": "sec secs second seconds",
        "min": "minute minutes mins",
        "h": "hour hours hr hrs",
        "day": "day days",
        "week": "week weeks",
        "month": "month months",
        "year": "year years yr yrs",
        "byte": "byte bytes",
        "kb": "kb kilobyte kilobytes",
        "mb": "mb megabyte megabytes",
        "gb": "gb gigabyte gigabytes",
        "tb": "tb terabyte terabytes",
        "mph": "mph",
        "kmh": "kmh kph",
        "deg": "degree degrees",
        "rad": "radian radians",
    }.items()
    for alias in aliases.split()
}

_CURRENCIES = {
    alias: canon
    for canon, aliases in {
        "usd": "usd $ dollar dollars buck bucks",
        "eur": "eur € euro euros",
        "gbp": "gbp £ pound pounds sterling",
        "jpy": "jpy ¥ yen",
        "cny": "cny rmb yuan renminbi",
        "inr": "inr rupee rupees",
        "chf": "chf franc francs",
        "cad": "cad",
        "aud": "aud",
        "btc": "btc bitcoin bitcoins",
        "eth": "eth ether ethereum",
    }.items()
    for alias in aliases.split()
}

# Programming languages, libraries, tools, platforms: an answer for one is wrong for another.
_TECH = {
    alias: canon
    for canon, aliases in {
        "python": "python python3 py", "javascript": "javascript js node nodejs node.js",
        "typescript": "typescript ts", "java": "java", "kotlin": "kotlin", "scala": "scala",
        "c": "c", "c++": "c++ cpp", "c#": "c# csharp .net dotnet", "go": "go golang",
        "rust": "rust", "ruby": "ruby", "php": "php", "swift": "swift", "r": "rlang",
        "perl": "perl", "haskell": "haskell", "elixir": "elixir", "erlang": "erlang",
        "lua": "lua", "dart": "dart", "julia": "julia", "matlab": "matlab", "sql": "sql",
        "bash": "bash sh shell zsh", "powershell": "powershell", "html": "html", "css": "css",
        "react": "react reactjs", "vue": "vue vuejs", "angular": "angular", "svelte": "svelte",
        "django": "django", "flask": "flask", "fastapi": "fastapi", "rails": "rails",
        "spring": "spring", "express": "express expressjs", "numpy": "numpy", "pandas": "pandas",
        "pytorch": "pytorch torch", "tensorflow": "tensorflow", "sklearn": "sklearn scikit-learn",
        "docker": "docker", "kubernetes": "kubernetes k8s", "git": "git", "postgres":
        "postgres postgresql psql", "mysql": "mysql mariadb", "sqlite": "sqlite sqlite3",
        "redis": "redis", "mongodb": "mongodb mongo", "linux": "linux ubuntu debian",
        "windows": "windows", "macos": "macos osx mac", "aws": "aws", "azure": "azure",
        "gcp": "gcp", "excel": "excel", "vim": "vim", "emacs": "emacs", "jquery": "jquery",
        "graphql": "graphql", "rest": "rest", "grpc": "grpc", "kafka": "kafka",
        "spark": "spark pyspark", "terraform": "terraform", "ansible": "ansible",
        "nginx": "nginx", "apache": "apache", "webpack": "webpack", "npm": "npm", "pip": "pip",
        "cargo": "cargo", "maven": "maven", "gradle": "gradle", "json": "json", "yaml": "yaml",
        "xml": "xml", "csv": "csv", "regex": "regex regexp",
    }.items()
    for alias in aliases.split()
}

# Contrast groups: one member on one side and another member on the other changes the answer.
_CONTRAST_GROUPS: list[frozenset[str]] = [
    frozenset(g.split())
    for g in """
    ascending descending asc desc
    increasing decreasing increase decrease
    first last
    min max minimum maximum smallest largest lowest highest least most
    read write
    create delete remove add insert drop
    buy sell
    local remote
    get post put patch
    before after
    above below
    up down
    upper lower uppercase lowercase
    left right
    start end beginning
    open close
    push pull
    encrypt decrypt
    encode decode
    compress decompress zip unzip
    import export
    upload download
    input output
    sync async synchronous asynchronous
    true false
    enable disable
    show hide
    horizontal vertical horizontally vertically
    internal external
    inner outer
    public private
    static dynamic
    mutable immutable
    positive negative
    odd even
    more less fewer
    better worse
    best worst
    north south east west
    past future
    rise fall
    gain loss profit
    bull bullish bear bearish
    lend borrow
    send receive
    client server
    frontend backend
    shallow deep
    union intersection
    sum product difference quotient
    sine cosine tangent sin cos tan
    derivative integral
    mean median mode average
    area perimeter volume circumference
    celsius fahrenheit
    long short
    high low
    hot cold
    fast slow
    old new
    cheap expensive
    easy hard
    import from
    yesterday today tomorrow tonight
    morning afternoon evening night midnight noon
    this last next previous coming
    hourly daily weekly monthly quarterly yearly annual annually
    int str list dict tuple set float bool char byte object file dataframe matrix vector class
    """.strip().splitlines()
]
_CONTRAST_INDEX: dict[str, list[int]] = {}
for _i, _g in enumerate(_CONTRAST_GROUPS):
    for _w in _g:
        _CONTRAST_INDEX.setdefault(_w, []).append(_i)

_DIRECTION = frozenset("to into from than over vs versus onto toward towards per".split())
_TOPIC = frozenset("about on regarding".split())
_NEGATION = frozenset("not no never without neither nor cannot can't don't doesn't isn't "
                      "aren't won't shouldn't wouldn't didn't except".split())
# Operators, from symbols and words, so "3x + 7 = 11" and "3x plus 7 equals 11" agree.
_OPS = {"+": "+", "plus": "+", "add": "+", "-": "-", "minus": "-", "subtract": "-",
        "*": "*", "×": "*", "times": "*", "multiply": "*", "multiplied": "*", "/": "/", "÷": "/",
        "divide": "/", "divided": "/", "^": "^", "power": "^", "=": "=", "equals": "=",
        "equal": "=", "<": "<", ">": ">"}
_NON_COMMUTATIVE = frozenset("-/^<>")
# Generic technical words: mentioning them or not changes nothing.
_GENERIC = frozenset("http https api url www app code program script online".split())

_MONTHS = "january february march april may june july august september october november december"
_DAYS = "monday tuesday wednesday thursday friday saturday sunday"
# Specific points in time. Relative ones (this/last/next week, daily/weekly) are contrast
# groups: they matter when both sides name one, not when one side leaves time implicit.
_DATE_WORDS = frozenset(
    (_MONTHS + " " + _DAYS + " jan feb mar apr jun jul aug sep sept oct nov dec today "
     "tomorrow yesterday tonight q1 q2 q3 q4 ytd").split()
)

# Words that may replace one another in a paraphrase without changing the question.
_SYNONYMS = {
    alias: canon
    for canon, aliases in {
        "make": "make create write build generate produce implement code craft compose",
        "explain": "explain describe define clarify",
        "show": "show give provide display",
        "fast": "fast quick quickly fastest quickest efficient efficiently speedy",
        "big": "big large huge",
        "small": "small little tiny",
        "int": "int integer integers ints",
        "str": "str string strings",
        "dict": "dict dictionary dictionaries dicts hashmap",
        "func": "func function functions method methods",
        "list": "list lists array arrays",
        "err": "err error errors exception exceptions",
        "fix": "fix solve resolve debug repair",
        "convert": "convert turn transform change cast",
        "find": "find get determine compute calculate calc work figure",
        "meaning": "meaning definition mean",
        "price": "price cost value worth",
        "car": "car automobile vehicle",
        "doctor": "doctor physician",
        "movie": "movie film",
        "buy": "buy purchase",
        "begin": "begin start",
        "happy": "happy glad",
        "story": "story tale",
        "poem": "poem verse",
        "picture": "picture image photo",
        "example": "example sample",
        "way": "way method approach",
        "kid": "kid kids child children",
        "share": "share shares stock stocks",
    }.items()
    for alias in aliases.split()
}


def _stem(w: str) -> str:
    for suf in ("ing", "ies", "es", "ed", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


def _canon(w: str) -> str:
    w = w.lower().rstrip(".")
    return _SYNONYMS.get(w) or _SYNONYMS.get(_stem(w)) or _stem(w)


def _num(text: str) -> str:
    text = text.replace(",", "").replace(" ", "")
    pct = text.endswith("%")
    value = float(text.rstrip("%"))
    s = f"{value:g}"
    return s + "%" if pct else s


def _contrast_keys(low: str) -> list[str]:
    return [k for k in dict.fromkeys((low, _stem(low), _canon(low))) if k in _CONTRAST_INDEX]


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
                and tok.lower() not in _TECH):
            for part in tok.split("-"):
                if part:
                    out.append(("word", part, m.end()))
        else:
            out.append((kind, tok, m.end()))
    return out


_AMBIGUOUS_TECH = frozenset(
    "c r go rest spring express apache spark excel mac sh ts py js torch node".split()
)


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
    for kind, tok, end in _tokens(text):
        if kind == "quoted":
            quoted.add(tok[1:-1].strip().lower())
            sentence_start, prev_kind = False, kind
            continue
        if kind == "money":
            ents.add("usd" if tok[0] == "$" else _CURRENCIES.get(tok[0], tok[0]))
            value = _num(re.sub(r"[^\d.,]", "", tok))
            numbers.add(value)
            number_seq.append(value)
            prev_kind = "number"
            continue
        if kind == "number":
            value = _num(tok)
            nxt = text[end : end + 16].lower().replace("-", " ").split()
            if nxt and nxt[0].strip(".,?") in _PERCENT_WORDS and not value.endswith("%"):
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
                ents.add(_CURRENCIES[tok])
            elif tok in _OPS:
                ops.add(_OPS[tok])
            continue
        word = tok.rstrip(".")
        low = word.lower()
        words.append(low)
        at_start = sentence_start
        sentence_start = tok.endswith(".") and not _is_identifier(tok)
        after_number = prev_kind == "number"
        prev_kind = "word"
        if low in _NEGATION or low.endswith("n't"):
            negation = True
            continue
        if low in _OPS and not (low in ("add", "equal") and not numbers):
            ops.add(_OPS[low])
        if low in _NUMBER_WORDS:
            value = f"{_NUMBER_WORDS[low]:g}"
            numbers.add(value)
            number_seq.append(value)
            content.append(value)
            prev_kind = "number"
            continue
        if low in _PERCENT_WORDS:
            continue
        if low in _UNITS:
            unit = "unit:" + _UNITS[low]
            (numbers if after_number else target_units).add(unit)
            content.append(unit)
            continue
        if _is_identifier(tok):
            idents.add(low)
            content.append(low)
            continue
        if low in _TECH and (low not in _AMBIGUOUS_TECH or word != low
                             or prev_word in ("in", "with", "using", "for")):
            langs.add(_TECH[low])
            content.append(_TECH[low])
            prev_word = low
            continue
        if low in _CURRENCIES:
            ents.add(_CURRENCIES[low])
            content.append(_CURRENCIES[low])
            continue
        if low in _DATE_WORDS:
            dates.add(low[:3] if low[:3] in _MONTHS else low)
        keys = _contrast_keys(low)
        contrast.update(keys)
        is_upper = word.isupper() and len(word) >= 2 and word.isalpha()
        capital = word[0].isupper() and not at_start and low not in _STOP and low != "i"
        if (is_upper or capital) and not keys and low not in _GENERIC:
            ents.add(low)
        prev_word = low
        if low not in _STOP and low not in _GENERIC:
            content.append(_canon(low))

    canon_words = [
        w if w in _DIRECTION or w in _TOPIC else "unit:" + _UNITS[w] if w in _UNITS else _canon(w)
        for w in words
    ]

    def salient(xs: list[str]) -> str:
        return next((x for x in xs if x not in _STOP and x not in _DIRECTION
                     and x not in _TOPIC and x not in _GENERIC), "")

    frames, topics = set(), set()
    for i, w in enumerate(canon_words):
        if w in _DIRECTION:
            before, after = salient(canon_words[:i][::-1]), salient(canon_words[i + 1 :])
            frames.add(("to" if w in ("into", "onto", "toward", "towards") else w, before, after))
        elif w in _TOPIC and (after := salient(canon_words[i + 1 :])):
            topics.add((w, after))
    letters = [c for c in text if c.isalpha()]
    return Slots(
        numbers=frozenset(numbers), number_seq=tuple(number_seq),
        target_units=frozenset(target_units), ops=frozenset(ops), quoted=frozenset(quoted),
        identifiers=frozenset(idents), languages=frozenset(langs), entities=frozenset(ents),
        dates=frozenset(dates), contrast=frozenset(contrast), negation=negation,
        content=tuple(content), relation_frames=frozenset(frames), topics=frozenset(topics),
        words=frozenset(words) | frozenset(_stem(w) for w in words),
        lower_case=bool(letters) and not any(c.isupper() for c in letters),
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None  # the slot kind that differed


OK = Verdict(True)


def _both_and_differ(a: frozenset[str], b: frozenset[str]) -> bool:
    return bool(a) and bool(b) and a != b


def _contrast_differs(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return False
    groups = {g for w in a | b for g in _CONTRAST_INDEX.get(w, [])}
    for g in groups:
        ma = {w for w in a if g in _CONTRAST_INDEX.get(w, [])}
        mb = {w for w in b if g in _CONTRAST_INDEX.get(w, [])}
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
            and ((a.ops | b.ops) & _NON_COMMUTATIVE or a.relation_frames or b.relation_frames)):
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


def _entities_differ(a: Slots, b: Slots) -> bool:
    """An entity on one side that the other side does not mention at all, in any case.
    Code-like tokens (model numbers, part codes, ids) name things too."""
    if ((a.entities | a.identifiers) - b.words) or ((b.entities | b.identifiers) - a.words):
        return True
    return _minimal_pair(a, b) or _topics_differ(a, b)


# Most specific kinds first: the reason reported is the most telling one.
_ORDER: tuple[SlotKind, ...] = (
    "contrast", "relations", "negation", "numbers", "quoted", "identifiers", "languages",
    "dates", "entities",
)


def verify(
    query: str, candidate: str, kinds: list[SlotKind] | tuple[SlotKind, ...] = ALL_SLOTS
) -> Verdict:
    if query == candidate:
        return OK
    a, b = extract(query), extract(candidate)
    for kind in (k for k in _ORDER if k in kinds):
        if kind == "numbers" and _numbers_differ(a, b):
            return Verdict(False, kind)
        if kind == "quoted" and a.quoted != b.quoted:
            return Verdict(False, kind)
        if kind == "identifiers" and a.identifiers != b.identifiers:
            return Verdict(False, kind)
        if kind == "languages" and a.languages != b.languages:
            return Verdict(False, kind)
        if kind == "entities" and _entities_differ(a, b):
            return Verdict(False, kind)
        if kind == "dates" and a.dates != b.dates:
            return Verdict(False, kind)
        if kind == "contrast" and _contrast_differs(a.contrast, b.contrast):
            return Verdict(False, kind)
        if kind == "relations" and _relations_differ(a, b):
            return Verdict(False, kind)
        if kind == "negation" and a.negation != b.negation:
            return Verdict(False, kind)
    return OK
