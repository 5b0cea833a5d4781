"""The entity check against false semantic hits: two questions close in meaning must still
name the same numbers, names and places, and agree on negation ("enable" vs "do not
enable"), or one's answer is wrong for the other. Embeddings are bad at exactly these."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
_WORD = re.compile(r"[A-Za-z](?:[A-Za-z'’\-]*[A-Za-z])?")
_QUOTED = re.compile(r"[\"“'‘`]([^\"”'’`]{2,60})[\"”'’`]")
_NEGATIONS = frozenset({
    "not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot", "can't", "cant",
    "don't", "dont", "doesn't", "doesnt", "didn't", "didnt", "isn't", "isnt", "aren't", "arent", "wasn't",
    "weren't", "won't", "wont", "wouldn't", "shouldn't", "couldn't", "mustn't", "haven't", "hasn't", "hadn't",
    "except", "excluding", "stop", "avoid",
})
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000",
    "first": "1", "second": "2", "third": "3", "half": "0.5", "dozen": "12",
}
# Capitalised words that are not names (they open sentences, or are "I").
_COMMON_WORDS = """
a an the i i'm i've i'd i'll what what's which who whom whose when where why how is are was were be do does did
can could would should will shall may might must please tell give show explain describe list write make find
help let i'd in on at for from to of by with about into and or but if then so it its this that these those
my your our their his her we you they he she me us them there here yes no ok okay hi hello hey dear thanks
thank summarise summarize compare translate convert calculate recommend suggest generate create is it's
book reserve get set send check open close cancel order buy define name say need want look search see use
any some all every each other another more most much many few also just only very really even still
"""
_COMMON = frozenset(_COMMON_WORDS.split())


# Words whose swap turns a question into its opposite; embeddings put such pairs close.
_OPPOSITES = [
    ("enable", "disable"), ("on", "off"), ("buy", "sell"), ("increase", "decrease"), ("upload", "download"),
    ("subscribe", "unsubscribe"), ("advantages", "disadvantages"), ("pros", "cons"), ("safe", "dangerous"),
    ("safe", "unsafe"), ("add", "remove"), ("install", "uninstall"), ("encrypt", "decrypt"), ("lock", "unlock"),
    ("import", "export"), ("before", "after"), ("start", "stop"), ("open", "close"), ("win", "lose"),
    ("maximum", "minimum"), ("max", "min"), ("highest", "lowest"), ("best", "worst"), ("most", "least"),
    ("more", "less"), ("above", "below"), ("inside", "outside"), ("hot", "cold"), ("true", "false"),
    ("allow", "deny"), ("accept", "reject"), ("connect", "disconnect"), ("mute", "unmute"), ("push", "pull"),
]
# The word after one of these names a role ("from London", "to Madrid"): roles must agree.
_ROLES = ("from", "to", "into", "via")
_SKIP_AFTER_ROLE = frozenset({"the", "a", "an", "my", "our", "your", "his", "her", "their"})


@dataclass(frozen=True, slots=True)
class Entities:
    numbers: tuple[str, ...]  # sorted, normalised
    names: frozenset[str]  # lowercased proper nouns and quoted strings
    negated: bool


def _normalise_number(raw: str) -> str:
    pct = raw.endswith("%")
    s = raw.rstrip("%").replace(",", "").lstrip("+")
    try:
        value = float(s)
    except ValueError:
        return raw
    text = f"{value:g}" if abs(value) < 1e15 else s
    return text + ("%" if pct else "")


def extract(text: str) -> Entities:
    numbers = [_normalise_number(m.group()) for m in _NUMBER.finditer(text)]
    words = [w.lower().replace("’", "'") for w in _WORD.findall(text)]
    numbers += [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS]
    names: set[str] = set()
    for m in _WORD.finditer(text):
        word = m.group()
        lower = word.lower().replace("’", "'")
        if word[0].isupper() and lower not in _NUMBER_WORDS and lower not in _COMMON:
            names.add(lower)
    names.update(q.strip().lower() for q in _QUOTED.findall(text))
    negated = any(w in _NEGATIONS or w.endswith("n't") for w in words)
    return Entities(tuple(sorted(numbers)), frozenset(names), negated)


def agree(a: str, b: str) -> bool:
    """Same numbers (as a multiset), every name of each found in the other (case-blind, so
    'paris' matches 'Paris'), and the same negation."""
    ea, eb = extract(a), extract(b)
    if ea.numbers != eb.numbers or ea.negated != eb.negated:
        return False
    wa, wb = _words(a), _words(b)
    for x, y in _OPPOSITES:
        if (x in wa and y in wb and y not in wa and x not in wb) or (y in wa and x in wb and x not in wa and y not in wb):
            return False
    ra, rb = _roles(a), _roles(b)
    for role in _ROLES:
        if ra.get(role) and rb.get(role) and ra[role] != rb[role]:
            return False
    return all(_mentions(b, n) for n in ea.names) and all(_mentions(a, n) for n in eb.names)


def _words(text: str) -> set[str]:
    return {w.lower().replace("’", "'") for w in _WORD.findall(text)}


def _roles(text: str) -> dict[str, set[str]]:
    """For 'from'/'to'/..., the words that follow them ("train from London to Madrid")."""
    words = [w.lower().replace("’", "'") for w in _WORD.findall(text)]
    out: dict[str, set[str]] = {}
    for i, w in enumerate(words[:-1]):
        if w in _ROLES:
            j = i + 1
            while j < len(words) - 1 and words[j] in _SKIP_AFTER_ROLE:
                j += 1
            out.setdefault(w, set()).add(words[j])
    return out


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text.lower().replace("’", "'")) is not None
