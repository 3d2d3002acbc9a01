"""Generates the labeled development set of hard pairs: benchmarks/data/dev_pairs.jsonl.

Written by the project (no public data set). Each family is one question phrased several ways
with slots; a *positive* pair is two phrasings with the same slot values (often many words
apart), a *negative* pair changes exactly one slot (a number, an entity, a language, a
contrast word) or swaps a relation. Deterministic (fixed seed). This set is for development and
tuning; benchmarks/data/holdout_pairs.jsonl is written separately and never tuned on.

    python benchmarks/devset.py   # rewrites the file
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).parent / "data" / "dev_pairs.jsonl"

# category -> list of (phrasings, slots) ; slot values are lists, one per slot name
FAMILIES: dict[str, list[tuple[list[str], dict[str, list[str]]]]] = {
    "code": [
        (["Write a {lang} function that sorts a list in {order} order",
          "How do I sort a list in {order} order in {lang}?",
          "In {lang}, what is the way to sort an array {order}?"],
         {"lang": ["Python", "Rust", "Java", "Go", "JavaScript"], "order": ["ascending", "descending"]}),
        (["How do I convert a {a} to a {b} in {lang}?",
          "{lang}: turn a {a} into a {b}",
          "What's the simplest way to change a {a} into a {b} using {lang}?"],
         {"a": ["string", "list"], "b": ["integer", "dictionary"], "lang": ["Python", "C#", "Kotlin"]}),
        (["How do I {op} a file in {lang}?", "What is the code to {op} a file with {lang}?",
          "Show me how to {op} a file using {lang}"],
         {"op": ["read", "write", "delete"], "lang": ["Python", "Java", "Ruby", "PHP"]}),
        (["How do I remove duplicates from a list in {lang}?",
          "{lang}: what's the best way to deduplicate a list?",
          "Remove duplicate items from an array in {lang}"],
         {"lang": ["Python", "TypeScript", "Swift", "Scala"]}),
        (["How do I send a {verb} request with {lib}?", "Make an HTTP {verb} call using {lib}",
          "Example of an HTTP {verb} request in {lib}"],
         {"verb": ["GET", "POST"], "lib": ["requests", "axios", "curl"]}),
        (["What does the `{ident}` function do in {lang}?", "Explain `{ident}` in {lang}",
          "How is `{ident}` used in {lang}?"],
         {"ident": ["map", "filter", "reduce", "zip"], "lang": ["Python", "JavaScript"]}),
        (["How do I find the {mm} value in a list in {lang}?",
          "Get the {mm} element of an array in {lang}",
          "{lang} code to return the {mm} of a list"],
         {"mm": ["maximum", "minimum"], "lang": ["Python", "Go", "C++"]}),
    ],
    "math": [
        (["What is {p} percent of {n}?", "Calculate {p}% of {n}", "How much is {p} percent of {n}?",
          "Find {p} percent of the number {n}"],
         {"p": ["15", "20", "25", "40"], "n": ["200", "80", "360"]}),
        (["What is {a} times {b}?", "Multiply {a} by {b}", "What do you get when you multiply {a} and {b}?"],
         {"a": ["17", "12", "45"], "b": ["23", "8", "19"]}),
        (["Convert {n} {u1} to {u2}", "How many {u2} are in {n} {u1}?", "{n} {u1} is how many {u2}?"],
         {"n": ["5", "12", "100"], "u1": ["miles", "kilograms"], "u2": ["kilometers", "pounds"]}),
        (["What is the square root of {n}?", "Compute the square root of {n}", "sqrt of {n}?"],
         {"n": ["144", "169", "200", "81"]}),
        (["Solve for x: {a}x + {b} = {c}", "Find x if {a}x + {b} = {c}", "What is x when {a}x plus {b} equals {c}?"],
         {"a": ["2", "3"], "b": ["3", "7"], "c": ["11", "19"]}),
        (["What is the {what} of a circle with radius {r}?", "Calculate the {what} of a circle whose radius is {r}",
          "A circle has radius {r}; what is its {what}?"],
         {"what": ["area", "circumference"], "r": ["4", "7", "10"]}),
    ],
    "factual": [
        (["What is the capital of {country}?", "Which city is the capital of {country}?",
          "Name the capital city of {country}", "{country}'s capital is which city?"],
         {"country": ["France", "Spain", "Australia", "Canada", "Japan", "Brazil", "Austria"]}),
        (["Who wrote {book}?", "Who is the author of {book}?", "{book} was written by whom?",
          "Tell me who wrote the book {book}"],
         {"book": ["Hamlet", "Macbeth", "Pride and Prejudice", "War and Peace", "Moby Dick"]}),
        (["How tall is {mountain}?", "What is the height of {mountain}?",
          "How high is {mountain} in meters?"],
         {"mountain": ["Mount Everest", "Kilimanjaro", "Mont Blanc", "Denali"]}),
        (["When did {event} end?", "In what year did {event} end?", "What year marked the end of {event}?"],
         {"event": ["World War I", "World War II", "the Cold War", "the Roman Empire"]}),
        (["What is the population of {city}?", "How many people live in {city}?",
          "{city} population size?"],
         {"city": ["Tokyo", "London", "Paris", "Berlin"]}),
        (["What is the boiling point of {liquid}?", "At what temperature does {liquid} boil?",
          "Boiling temperature of {liquid}?"],
         {"liquid": ["water", "ethanol", "mercury"]}),
        (["What is the {attr} of {country}?", "Tell me the {attr} of {country}",
          "{country}: what is its {attr}?"],
         {"attr": ["population", "currency", "official language"], "country": ["Germany", "Mexico"]}),
        (["{wh} did Napoleon die?", "Do you know {wh} Napoleon died?", "Tell me {wh} Napoleon died"],
         {"wh": ["when", "where", "why"]}),
        (["Who was the {ord} person to walk on the Moon?", "Name the {ord} human who walked on the Moon",
          "Which astronaut was the {ord} to set foot on the Moon?"],
         {"ord": ["first", "second", "third"]}),
    ],
    "finance_news": [
        (["What is {co}'s stock price right now?", "Current share price of {co}",
          "How much is {co} stock trading at right now?"],
         {"co": ["Apple", "Microsoft", "Tesla", "Amazon", "Nvidia"]}),
        (["What is the exchange rate from {c1} to {c2}?", "How much is one {c1} in {c2}?",
          "Convert {c1} to {c2} at the current rate"],
         {"c1": ["USD", "EUR", "GBP"], "c2": ["JPY", "CHF"]}),
        (["Should I {bs} {co} shares this week?", "Is this a good week to {bs} {co} stock?",
          "Would you {bs} {co} stock this week?"],
         {"bs": ["buy", "sell"], "co": ["Tesla", "Google", "Netflix"]}),
        (["How did the {index} do {when}?", "{index} performance {when}",
          "What happened to the {index} {when}?"],
         {"index": ["S&P 500", "Nasdaq", "Dow Jones"], "when": ["today", "yesterday", "this week"]}),
        (["What was {co}'s revenue in {year}?", "How much revenue did {co} make in {year}?",
          "{co} total revenue for {year}"],
         {"co": ["Apple", "Tesla"], "year": ["2021", "2022", "2023"]}),
    ],
    "conversation": [
        (["Hi, how are you?", "Hello! How are you doing?", "Hey there, how are you?",
          "hi how are you doing today"], {}),
        (["Tell me a joke about {topic}", "Can you tell me a funny joke about {topic}?",
          "I want to hear a joke about {topic}"],
         {"topic": ["cats", "dogs", "programmers", "teachers"]}),
        (["Good {time}!", "Good {time} to you", "Wishing you a good {time}"],
         {"time": ["morning", "evening", "night"]}),
        (["Thanks a lot for your help!", "Thank you so much for helping me", "thanks for the help"], {}),
        (["What can you do?", "What are you able to help me with?", "What kinds of things can you do for me?"], {}),
        (["Do you like {thing}?", "Are you a fan of {thing}?", "What do you think about {thing}?"],
         {"thing": ["music", "football", "pizza"]}),
        (["Can you suggest a good {thing} for the weekend?", "What {thing} would you suggest for this weekend?",
          "Any {thing} to suggest for the weekend?"],
         {"thing": ["podcast", "board game", "hiking trail"]}),
    ],
    "creative": [
        (["Write a poem about {topic}", "Compose a short poem on {topic}",
          "Can you write me a poem about {topic}?"],
         {"topic": ["the ocean", "autumn", "lost love", "the city at night"]}),
        (["Write a {form} about spring", "Compose a {form} on the theme of spring",
          "I'd like a {form} about springtime"],
         {"form": ["haiku", "sonnet", "limerick"]}),
        (["Give me {n} name ideas for a {biz}", "Suggest {n} names for a {biz}",
          "Brainstorm {n} possible names for my {biz}"],
         {"n": ["five", "ten"], "biz": ["coffee shop", "bakery", "bookstore"]}),
        (["Write a short story about a {hero} who is afraid of {fear}",
          "Tell a short tale of a {hero} that fears {fear}"],
         {"hero": ["dragon", "knight"], "fear": ["fire", "the dark"]}),
    ],
    "general": [
        (["How do I make {dish}?", "What's a good recipe for {dish}?", "Give me a recipe for {dish}",
          "Steps to cook {dish} at home"],
         {"dish": ["pancakes", "lasagna", "banana bread", "guacamole"]}),
        (["What should I see in {city}?", "Top sights to visit in {city}",
          "What are the must-see attractions in {city}?"],
         {"city": ["Rome", "Paris", "Kyoto", "Lisbon"]}),
        (["How do I remove a {stain} stain from a shirt?", "Getting a {stain} stain out of a shirt",
          "What removes {stain} stains from clothes?"],
         {"stain": ["red wine", "coffee", "grease", "ink"]}),
        (["How can I improve my sleep?", "Tips to sleep better at night", "What can I do to get better sleep?"], {}),
        (["Plan a {n} day trip to {city}", "Make me a {n}-day itinerary for {city}",
          "What should I do with {n} days in {city}?"],
         {"n": ["two", "three", "five"], "city": ["Rome", "Barcelona"]}),
        (["How long should I {cook} {food}?", "For how many minutes do I {cook} {food}?",
          "What's the right time to {cook} {food}?"],
         {"cook": ["steam", "roast"], "food": ["potatoes", "carrots", "broccoli"]}),
    ],
}

# Swapped relations: (template, a, b) -> positive with itself rephrased is not needed; the
# negative is the same template with a and b exchanged.
SWAPS: dict[str, list[tuple[str, str, str]]] = {
    "code": [
        ("How do I convert a {a} to a {b} in Python?", "string", "integer"),
        ("Convert {a} to {b} in JavaScript", "JSON", "XML"),
        ("How do I cast a {a} to a {b} in Java?", "long", "int"),
        ("Translate this code from {a} to {b}", "Java", "Kotlin"),
    ],
    "math": [
        ("Is {a} greater than {b}?", "0.5", "0.45"),
        ("Convert {a} to {b}", "Celsius", "Fahrenheit"),
        ("What is {a} divided by {b}?", "12", "4"),
    ],
    "factual": [
        ("How far is it from {a} to {b}?", "Paris", "London"),
        ("Translate hello from {a} to {b}", "English", "French"),
    ],
    "finance_news": [
        ("Convert 100 {a} to {b}", "USD", "EUR"),
        ("Exchange rate {a} to {b} today", "GBP", "JPY"),
    ],
}


def fill(t: str, values: dict[str, str]) -> str:
    return t.format(**values)


def generate(seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for category, families in FAMILIES.items():
        pos: list[dict[str, object]] = []
        neg: list[dict[str, object]] = []
        for phrasings, slots in families:
            names = list(slots)
            combos = [dict(zip(names, vs, strict=True)) for vs in itertools.product(*slots.values())] or [{}]
            for values in combos:
                for p1, p2 in itertools.combinations(phrasings, 2):
                    pos.append({"a": fill(p1, values), "b": fill(p2, values), "same": True,
                                "category": category, "kind": "paraphrase"})
                for name in names:
                    for other in slots[name]:
                        if other == values[name]:
                            continue
                        changed = {**values, name: other}
                        p1, p2 = rng.choice(phrasings), rng.choice(phrasings)
                        neg.append({"a": fill(p1, values), "b": fill(p2, changed), "same": False,
                                    "category": category, "kind": f"slot:{name}"})
        for template, a, b in SWAPS.get(category, []):
            neg.append({"a": template.format(a=a, b=b), "b": template.format(a=b, b=a),
                        "same": False, "category": category, "kind": "swap"})
        rng.shuffle(pos)
        rng.shuffle(neg)
        n = min(len(pos), 30)
        swaps = [r for r in neg if r["kind"] == "swap"]
        others = [r for r in neg if r["kind"] != "swap"][: max(0, 30 - len(swaps))]
        rows += pos[:n] + swaps + others
    return rows


if __name__ == "__main__":
    rows = generate()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    by_cat: dict[str, list[int]] = {}
    for r in rows:
        c = by_cat.setdefault(str(r["category"]), [0, 0])
        c[0 if r["same"] else 1] += 1
    print(f"{len(rows)} pairs -> {OUT}")
    for cat, (p, n) in sorted(by_cat.items()):
        print(f"  {cat:14} {p:3} positive {n:3} negative")
