"""Builds cache_pairs.jsonl: labelled question pairs for the semantic cache.

`paraphrase` pairs ask the same thing in other words (a hit is right); `negative` pairs are
hard negatives that look alike but need another answer: another entity (`entity`), another
number (`number`), a negation or its opposite (`negation`), the opposite action
(`antonym`), or the same places the other way round (`direction`).

    python bench/data/make_cache_pairs.py   # deterministic (seeded)
"""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(20261123)

COUNTRIES = ["France", "Germany", "Japan", "Brazil", "Canada", "Kenya", "Australia", "Norway", "Mexico", "India"]
CITIES = ["Paris", "Berlin", "Tokyo", "London", "New York", "Madrid", "Oslo", "Nairobi", "Sydney", "Toronto"]
PLANETS = ["Jupiter", "Saturn", "Mars", "Neptune", "Uranus"]
BOOKS = ["Pride and Prejudice", "Moby Dick", "War and Peace", "Dune", "The Hobbit", "Beloved"]
DRUGS = ["ibuprofen", "metformin", "amoxicillin", "sertraline", "lisinopril"]
FOODS = ["chicken breast", "tofu", "lentils", "salmon", "almonds"]
LANDMARKS = ["Eiffel Tower", "Statue of Liberty", "Burj Khalifa", "Big Ben", "Space Needle"]
SERVICES = ["GitHub", "Google", "Slack", "Dropbox", "AWS"]
LANGS = ["Japanese", "Spanish", "German", "Italian", "Korean"]
WORDS = ["good morning", "thank you", "where is the station", "I love you", "how much is this"]
DISHES = ["lasagna", "pad thai", "banana bread", "guacamole", "risotto"]
TERMS = ["idempotent", "amortization", "photosynthesis", "latency", "inflation"]
MONTHS = ["January", "March", "June", "September", "November"]
DAYS = ["Monday", "Friday", "December 3rd", "next Tuesday", "the weekend"]

# intent -> (phrasings with the same meaning, slot -> values)
INTENTS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "capital": (["What is the capital of {c}?", "Which city is the capital of {c}?",
                 "Tell me the capital city of {c}.", "what's the capital of {c}", "Name the capital of {c}."],
                {"c": COUNTRIES}),
    "population": (["What is the population of {c}?", "How many people live in {c}?",
                    "How many inhabitants does {c} have?", "What's the current population of {c}?"],
                   {"c": COUNTRIES}),
    "weather": (["What's the weather in {city} tomorrow?", "What will the weather be like in {city} tomorrow?",
                 "Weather forecast for {city} tomorrow?", "How will the weather be in {city} tomorrow?"],
                {"city": CITIES}),
    "convert": (["Convert {n} US dollars to euros.", "How much is {n} USD in EUR?",
                 "What is {n} dollars in euros?", "{n} USD to EUR please"], {"n": ["20", "100", "250", "1000"]}),
    "order": (["Where is my order #{n}?", "Can you check the status of order {n}?",
               "What's the status of my order number {n}?", "Track order #{n} for me."],
              {"n": ["48213", "10077", "55120", "73904"]}),
    "translate": (["Translate '{w}' into {lang}.", "How do you say '{w}' in {lang}?", "What is '{w}' in {lang}?"],
                  {"w": WORDS, "lang": LANGS}),
    "moons": (["How many moons does {p} have?", "How many moons orbit {p}?", "What is the number of moons of {p}?"],
              {"p": PLANETS}),
    "author": (["Who wrote {b}?", "Who is the author of {b}?", "Which writer wrote {b}?"], {"b": BOOKS}),
    "refund": (["Please refund the ${n} charge from {m}.", "I want a refund for the ${n} charge in {m}.",
                "Can I get the ${n} I was charged in {m} refunded?"], {"n": ["49.99", "12", "120"], "m": MONTHS}),
    "multiply": (["What is {n} times {k}?", "Multiply {n} by {k}.", "What's {n} multiplied by {k}?"],
                 {"n": ["17", "23", "48", "125"], "k": ["3", "12", "19"]}),
    "protein": (["How much protein is in {n} grams of {f}?", "Protein content of {n}g of {f}?",
                 "How many grams of protein are in {n} grams of {f}?"], {"n": ["100", "200", "50"], "f": FOODS}),
    "height": (["How tall is the {l}?", "What is the height of the {l}?", "How high is the {l}?"],
               {"l": LANDMARKS}),
    "side_effects": (["What are the side effects of {d}?", "What side effects does {d} have?",
                      "Which side effects can {d} cause?"], {"d": DRUGS}),
    "recipe": (["How do I make {dish}?", "What's a good recipe for {dish}?", "Give me a recipe for {dish}."],
               {"dish": DISHES}),
    "define": (["What does {t} mean?", "Define {t}.", "What is the meaning of {t}?"], {"t": TERMS}),
    "password": (["How do I reset my password?", "How can I reset my password?",
                  "What are the steps to reset my password?", "how to reset my password"], {}),
    "cancel": (["How do I cancel my subscription?", "How can I cancel my subscription?",
                "What's the way to cancel my subscription?", "Steps to cancel my subscription?"], {}),
    "enable_2fa": (["How do I enable two-factor authentication on {s}?", "How can I turn on 2FA for {s}?",
                    "What are the steps to enable two-factor auth on {s}?"], {"s": SERVICES}),
    "distance": (["How far is {a} from {b2}?", "What's the distance between {a} and {b2}?",
                  "How many kilometres from {a} to {b2}?"], {"a": CITIES[:5], "b2": CITIES[5:]}),
}

# hard negatives that only words of opposite meaning tell apart: (template A, template B, slots)
ANTONYMS: list[tuple[str, str, dict[str, list[str]]]] = [
    ("How do I enable two-factor authentication on {s}?", "How do I disable two-factor authentication on {s}?",
     {"s": SERVICES}),
    ("Should I buy {x} stock now?", "Should I sell {x} stock now?", {"x": ["Apple", "Tesla", "Nvidia", "Amazon"]}),
    ("How do I increase the font size in {app}?", "How do I decrease the font size in {app}?",
     {"app": ["Word", "Chrome", "VS Code", "Outlook"]}),
    ("How do I upload files to {s}?", "How do I download files from {s}?", {"s": SERVICES}),
    ("How do I subscribe to the {n} newsletter?", "How do I unsubscribe from the {n} newsletter?",
     {"n": ["weekly", "product", "security"]}),
    ("Is it safe to {act}?", "Is it dangerous to {act}?",
     {"act": ["take ibuprofen with coffee", "store rice in the fridge", "use bleach on wool", "fly while pregnant"]}),
    ("What are the advantages of {t}?", "What are the disadvantages of {t}?",
     {"t": ["remote work", "nuclear power", "electric cars", "microservices"]}),
    ("How do I turn on dark mode in {app}?", "How do I turn off dark mode in {app}?",
     {"app": ["Word", "Chrome", "Slack", "iOS"]}),
    ("When does the {x} open?", "When does the {x} close?", {"x": ["library", "pharmacy", "bank", "gym"]}),
    ("How do I scroll up in {app}?", "How do I scroll down in {app}?", {"app": ["Word", "Chrome", "Excel"]}),
    ("Is {food} good for a cold?", "Is {food} bad for a cold?", {"food": ["honey", "milk", "ginger", "coffee"]}),
    ("Which {x} is the cheapest?", "Which {x} is the most expensive?", {"x": ["phone plan", "airline", "car"]}),
    ("Is {x} a renewable resource?", "Is {x} a finite resource?", {"x": ["wood", "natural gas", "coal"]}),
]
# hard negatives made by swapping one content word for a sibling (not an antonym)
SIBLINGS: list[tuple[str, list[str]]] = [
    ("How much caffeine is in {w}?", ["coffee", "tea", "cola", "cocoa"]),
    ("Is {w} safe for babies?", ["honey", "peanut butter", "cow milk", "spinach"]),
    ("How do I remove a {w} stain?", ["wine", "coffee", "grease", "ink"]),
    ("What is the melting point of {w}?", ["iron", "gold", "copper", "lead"]),
    ("How do I declare a variable in {w}?", ["rust", "go", "kotlin", "ruby"]),
]
NEGATIONS: list[tuple[str, str, dict[str, list[str]]]] = [
    ("Can I take {d} with alcohol?", "Can't I take {d} with alcohol?", {"d": DRUGS}),
    ("Should I {act}?", "Should I not {act}?",
     {"act": ["water succulents daily", "run a marathon with a cold", "refreeze thawed chicken", "rebase main"]}),
    ("Which foods contain gluten?", "Which foods don't contain gluten?", {}),
    ("List the countries that use the euro.", "List the countries that do not use the euro.", {}),
    ("Why does my {x} turn on?", "Why doesn't my {x} turn on?", {"x": ["laptop", "TV", "phone", "printer"]}),
    ("Is {x} a prime number?", "Is {x} not a prime number?", {"x": ["91", "97", "51"]}),
    ("Do I need a visa to visit {c}?", "Do I not need a visa to visit {c}?", {"c": COUNTRIES[:5]}),
    ("Is it legal to {act}?", "Is it illegal to {act}?",
     {"act": ["carry pepper spray", "fly a drone in a park", "record a phone call"]}),
    ("Is this {x} available?", "Is this {x} unavailable?", {"x": ["room", "seat", "username"]}),
]
DIRECTIONS: list[tuple[str, dict[str, list[str]]]] = [
    ("Find flights from {a} to {b2} on Friday.", {"a": CITIES[:5], "b2": CITIES[5:]}),
    ("Convert 100 {a} to {b2}.", {"a": ["US dollars", "euros", "yen"], "b2": ["pounds", "rupees", "pesos"]}),
    ("How long is the train from {a} to {b2}?", {"a": CITIES[:5], "b2": CITIES[5:]}),
    ("Is {a} larger than {b2}?", {"a": COUNTRIES[:5], "b2": COUNTRIES[5:]}),
    ("Did {a} defeat {b2} in the final?", {"a": COUNTRIES[:5], "b2": COUNTRIES[5:]}),
]
NUMBER_TEMPLATES: list[tuple[str, list[tuple[str, str]]]] = [
    ("Convert {v} US dollars to euros.", [("100", "200"), ("20", "25"), ("1000", "1500")]),
    ("What is {v} times 12?", [("17", "18"), ("23", "32"), ("48", "84")]),
    ("Book a table for {v} at 7pm on Friday.", [("two", "four"), ("2", "3"), ("six", "eight")]),
    ("Set a timer for {v} minutes.", [("5", "15"), ("10", "12"), ("30", "45")]),
    ("What was the GDP of Japan in {v}?", [("1990", "2020"), ("2008", "2009"), ("1985", "1995")]),
    ("Please refund the ${v} charge from March.", [("49.99", "49.98"), ("12", "120"), ("5", "50")]),
    ("How much protein is in {v} grams of tofu?", [("100", "200"), ("50", "150"), ("300", "30")]),
    ("Where is my order #{v}?", [("48213", "48231"), ("10077", "10078"), ("55120", "55210")]),
]


def fill(template: str, slots: dict[str, str]) -> str:
    return template.format(**slots)


def pick(slots: dict[str, list[str]]) -> dict[str, str]:
    return {k: rng.choice(v) for k, v in slots.items()}


def main() -> None:
    pairs: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(a: str, b: str, label: str, kind: str) -> None:
        if a == b or (a, b) in seen or (b, a) in seen:
            return
        seen.add((a, b))
        pairs.append({"a": a, "b": b, "label": label, "kind": kind})

    for intent, (phrasings, slots) in INTENTS.items():
        combos = list(combinations(phrasings, 2))
        for _ in range(12):
            values = pick(slots)
            a, b = rng.choice(combos)
            add(fill(a, values), fill(b, values), "paraphrase", intent)
        for slot, choices in slots.items():
            for _ in range(5):
                values = pick(slots)
                other = dict(values, **{slot: rng.choice([c for c in choices if c != values[slot]])})
                kind = "number" if slot in ("n", "k") else "entity"
                add(fill(rng.choice(phrasings), values), fill(rng.choice(phrasings), other), "negative", kind)
    for a_t, b_t, slots in ANTONYMS:
        for _ in range(4):
            values = pick(slots)
            add(fill(a_t, values), fill(b_t, values), "negative", "antonym")
    for a_t, b_t, slots in NEGATIONS:
        for _ in range(4 if slots else 1):
            values = pick(slots)
            add(fill(a_t, values), fill(b_t, values), "negative", "negation")
    for template, slots in DIRECTIONS:
        for _ in range(5):
            values = pick(slots)
            swapped = {"a": values["b2"], "b2": values["a"]}
            add(fill(template, values), fill(template, swapped), "negative", "direction")
    for template, words in SIBLINGS:
        for x, y in combinations(words, 2):
            add(template.format(w=x), template.format(w=y), "negative", "entity")
    for template, swaps in NUMBER_TEMPLATES:
        for x, y in swaps:
            add(template.format(v=x), template.format(v=y), "negative", "number")
    rng.shuffle(pairs)
    with open(HERE / "cache_pairs.jsonl", "w") as out:
        for p in pairs:
            out.write(json.dumps(p) + "\n")
    by = {label: sum(p["label"] == label for p in pairs) for label in ("paraphrase", "negative")}
    print(f"{len(pairs)} pairs: {by}")


if __name__ == "__main__":
    main()
