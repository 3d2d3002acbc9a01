"""The verifier's vocabulary: which words are numbers, units, currencies, technologies, dates,
negations, operators, members of a contrast group, or synonyms of one another. Data only; the
rules that use it are in ``slots`` (extraction) and ``verify`` (comparison)."""

from __future__ import annotations

STOP = frozenset(
    """a an the of in on at for to from by with about as into onto over under is are was were be
    been being am do does did doing done can could would should will shall may might must i me my
    we our you your it its this that these those there here what which who whom whose when where
    why how please tell show give explain help want need like just some any all each every one
    way and or but so if then than also very really quite much many get got make made using use
    used via per vs versus let lets let's know i'm i'd im whats what's hows how's is it's it is
    ok okay hey hi hello thanks thank someone something can't cannot could you would you
    """.split()
)


def _by_alias(table: dict[str, str]) -> dict[str, str]:
    """``{canonical: "alias alias ..."}`` -> ``{alias: canonical}``."""
    return {alias: canon for canon, aliases in table.items() for alias in aliases.split()}


NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "half": 0.5, "quarter": 0.25,
    "twice": 2, "double": 2, "triple": 3, "dozen": 12,
}
PERCENT_WORDS = frozenset({"percent", "percentage", "pct"})

# Units: each alias maps to one canonical name.
UNITS = _by_alias({
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
})

CURRENCIES = _by_alias({
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
})

# Programming languages, libraries, tools, platforms: an answer for one is wrong for another.
TECH = _by_alias({
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
})

# Contrast groups: one member on one side and another member on the other changes the answer.
CONTRAST_GROUPS: list[frozenset[str]] = [
    frozenset(g.split())
    for g in """
    ascending descending asc desc
    increasing decreasing increase decrease
    first second third fourth fifth sixth seventh eighth ninth tenth last
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
    when where why
    hourly daily weekly monthly quarterly yearly annual annually
    int str list dict tuple set float bool char byte object file dataframe matrix vector class
    """.strip().splitlines()
]
CONTRAST_INDEX: dict[str, list[int]] = {}
for _i, _g in enumerate(CONTRAST_GROUPS):
    for _w in _g:
        CONTRAST_INDEX.setdefault(_w, []).append(_i)

DIRECTION = frozenset("to into from than over vs versus onto toward towards per".split())
TOPIC = frozenset("about on regarding".split())
NEGATION = frozenset("not no never without neither nor cannot can't don't doesn't isn't "
                      "aren't won't shouldn't wouldn't didn't except".split())
# "no" as a speaker's self-correction, not a negation: the words that follow or precede it
REPAIR_AFTER = frozenset("no make sorry i um uh er wait rather actually scratch oh wow let tell "
                         "change the a an what who whom whose when where why how which".split())
REPAIR_BEFORE = frozenset("or oh um uh er wait no sorry".split())
# Operators, from symbols and words, so "3x + 7 = 11" and "3x plus 7 equals 11" agree.
OPS = {"+": "+", "plus": "+", "add": "+", "-": "-", "minus": "-", "subtract": "-",
        "*": "*", "×": "*", "times": "*", "multiply": "*", "multiplied": "*", "/": "/", "÷": "/",
        "divide": "/", "divided": "/", "^": "^", "power": "^", "=": "=", "equals": "=",
        "equal": "=", "<": "<", ">": ">"}
NON_COMMUTATIVE = frozenset("-/^<>")
# Generic technical words: mentioning them or not changes nothing.
GENERIC = frozenset("http https api url www app code program script online".split())

MONTHS = "january february march april may june july august september october november december"
DAYS = "monday tuesday wednesday thursday friday saturday sunday"
# Specific points in time. Relative ones (this/last/next week, daily/weekly) are contrast
# groups: they matter when both sides name one, not when one side leaves time implicit.
DATE_WORDS = frozenset(
    (MONTHS + " " + DAYS + " jan feb mar apr jun jul aug sep sept oct nov dec today "
     "tomorrow yesterday tonight q1 q2 q3 q4 ytd").split()
)

# Words that may replace one another in a paraphrase without changing the question.
SYNONYMS = _by_alias({
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
})

# Words before a unit named without a number that make it a measure ("how many feet in a
# mile", "convert to km"): elsewhere "foot", "second" or "pound" are ordinary words.
MEASURE_CONTEXT = frozenset("in to into many much a an per one square cubic".split())
