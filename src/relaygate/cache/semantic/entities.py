"""The entity check against false semantic hits: two questions close in meaning must still
name the same numbers, names and places, and agree on negation ("enable" vs "do not
enable"), or one's answer is wrong for the other. Embeddings are bad at exactly these.

Beyond named entities, two more general rules (precision over recall: a false hit serves a
wrong answer, a missed paraphrase costs one upstream call):

- content words: after dropping function words, question words and request verbs, and
  folding plurals and unit spellings, neither question may *swap* content words for others
  ("soft yolk" vs "hard yolk", "beef" vs "pork", "raise" vs "lower", "open" vs "closed",
  "possible" vs "impossible"). Adding or dropping words is allowed ("Which city is the
  capital of X" ~ "the capital of X"), and so is rewording one word as several ("population"
  ~ "people live"); a one-for-one swap is how hard negatives are made, and synonyms swapped
  one for one are the recall this gives up.
- order: the same names in another order ("Did A beat B" vs "Did B beat A"), or another word
  after a role word (from, to, than, ...), ask something else."""

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
    # function words (not content words below): "zoom in" vs "zoom out", "scroll up" vs "down"
    ("in", "out"), ("up", "down"), ("over", "under"), ("with", "without"),
]
# Not content words: function words, auxiliaries, pronouns, question words and the generic
# request words that paraphrases add, drop or trade freely. Action words that change the
# answer (open, close, cancel, buy, book, order, send, ...) are content words.
_FUNCTION_WORDS_TEXT = """
a an the i i'm i've i'd i'll what what's which who whom whose when where why how is are was were be do does did
can could would should will shall may might must please tell give show explain describe list write find help let
in on at for from to of by with about into and or but if then so it its this that these those my your our their
his her we you they he she me us them there here yes ok okay hi hello hey dear thanks thank summarise summarize
it's any some all every each other another more most less least much many few also just only very really even still
am been being has have had having get got gets doing done as than too such own same both between through
during again further once out up down over under off via per vs versus like you'd kindly
way ways step steps easiest simplest possible possibly exactly actually currently current now
know mean means meaning number count amount total name say need want look search see use make create
generate recommend suggest calculate compute
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
# Content words that ask the same thing (folded to the first of each group before comparing).
_SYNONYM_GROUPS = [
    ("tall", "high", "height"), ("far", "distance"), ("author", "writer", "write", "wrote", "written"),
    ("population", "inhabitant", "resident"), ("multiply", "times", "product"), ("definition", "define"),
    ("authentication", "auth"), ("enable", "activate"), ("disable", "deactivate"), ("buy", "purchase"),
    ("start", "begin"), ("book", "reserve"), ("car", "automobile"), ("price", "cost"), ("big", "large"), ("small", "little"),
]
_SYNONYMS = {w: group[0] for group in _SYNONYM_GROUPS for w in group}
# Spellings and abbreviations of one unit (a question in "km" asks the same as in "kilometres").
_UNIT_SPELLINGS = {
    "usd": "dollar", "us": "dollar", "eur": "euro", "gbp": "pound", "jpy": "yen", "inr": "rupee",
    "km": "kilometer", "kilometre": "kilometer", "kms": "kilometer", "mi": "mile",
    "m": "meter", "metre": "meter", "cm": "centimeter", "centimetre": "centimeter",
    "mm": "millimeter", "millimetre": "millimeter", "kg": "kilogram", "kilo": "kilogram",
    "g": "gram", "gramme": "gram", "lb": "pound", "lbs": "pound", "oz": "ounce",
    "l": "liter", "litre": "liter", "ml": "milliliter", "millilitre": "milliliter",
    "min": "minute", "mins": "minute", "sec": "second", "secs": "second", "hr": "hour", "hrs": "hour",
    "ft": "foot", "feet": "foot", "in.": "inch", "inches": "inch",
}
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "non-", "anti", "mis")
# The word after one of these names a role ("from London", "to Madrid", "bigger than Russia"):
# roles must agree.
_ROLES = ("from", "to", "into", "via", "than", "versus", "vs")
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
    names = set(_name_sequence(text))
    names.update(q.strip().lower() for q in _QUOTED.findall(text))
    negated = any(w in _NEGATIONS or w.endswith("n't") for w in words)
    return Entities(tuple(sorted(numbers)), frozenset(names), negated)


_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\W*$")


def _name_sequence(text: str) -> list[str]:
    """Capitalised words in order, lowercased; a capital that only opens a sentence ("Ship
    this package", "Multiply 23 by 3") makes no name unless the word is all capitals."""
    out: list[str] = []
    for m in _WORD.finditer(text):
        word = m.group()
        lower = word.lower().replace("’", "'")
        if not word[0].isupper() or lower in _NUMBER_WORDS or lower in _COMMON or lower in _UNIT_SPELLINGS:
            continue  # units ("USD", "KM") are compared as content words
        if _SENTENCE_START.search(text[: m.start()]) and not (word.isupper() and len(word) > 1):
            continue
        out.append(lower)
    return out


def _forms(word: str) -> frozenset[str]:
    """The word and the bases it may be an inflection of (plural, past, -ing, superlative),
    units and synonyms folded: enough to compare content words ("calories" ~ "calorie",
    "charged" ~ "charge", "km" ~ "kilometres", "tallest" ~ "high"); not a real stemmer."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    forms = {w}
    if len(w) > 4 and w.endswith(("ies", "ied")):
        forms.add(w[:-3] + "y")
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        forms.add(w[:-1])
        if w.endswith("es"):
            forms.add(w[:-2])
    for suffix in ("ed", "ing", "est"):
        base = w[: -len(suffix)]
        if w.endswith(suffix) and len(base) >= 3:
            forms.update((base, base + "e"))
            if len(base) > 3 and base[-1] == base[-2]:
                forms.add(base[:-1])  # "biggest", "stopped"
    folded = {_UNIT_SPELLINGS.get(f, f) for f in forms}
    return frozenset(_SYNONYMS.get(f, f) for f in folded)


def content_words(text: str) -> list[frozenset[str]]:
    """The forms of each word that carries the question's meaning (not numbers, negations or
    function words)."""
    out: list[frozenset[str]] = []
    for raw in _WORD.findall(text):
        w = raw.lower().replace("’", "'")
        if w in _FUNCTION_WORDS or w in _NEGATIONS or w in _NUMBER_WORDS or w.endswith("n't"):
            continue
        out.append(_forms(w))
    return out


def swapped(a: str, b: str) -> bool:
    """True when each question has content words the other lacks, as many on each side: a
    one-for-one substitution ("soft" for "hard", "beef" for "pork")."""
    ca, cb = content_words(a), content_words(b)
    only_a = {min(f) for f in ca if not any(f & g for g in cb)}
    only_b = {min(g) for g in cb if not any(g & f for f in ca)}
    return bool(only_a) and len(only_a) == len(only_b)


def _negated_forms(a: set[str], b: set[str]) -> bool:
    """A word of one question is a negated form of a word of the other: "possible" vs
    "impossible", "like" vs "dislike", "visible" vs "invisible"."""
    for x, y in ((a, b), (b, a)):
        for w in x - y:
            for prefix in _NEGATING_PREFIXES:
                if w.startswith(prefix) and len(w) - len(prefix) >= 3 and w[len(prefix):] in y - x:
                    return True
    return False


def agree(a: str, b: str) -> bool:
    """Same numbers (as a multiset), every name of each found in the other (case-blind, so
    'paris' matches 'Paris'), and the same negation."""
    ea, eb = extract(a), extract(b)
    if ea.numbers != eb.numbers or ea.negated != eb.negated:
        return False
    wa, wb = _words(a), _words(b)
    if _negated_forms(wa, wb):
        return False
    for x, y in _OPPOSITES:
        if (x in wa and y in wb and y not in wa and x not in wb) or (y in wa and x in wb and x not in wa and y not in wb):
            return False
    ra, rb = _roles(a), _roles(b)
    for role in _ROLES:
        if ra.get(role) and rb.get(role) and ra[role] != rb[role]:
            return False
    if not (all(_mentions(b, n) for n in ea.names) and all(_mentions(a, n) for n in eb.names)):
        return False
    na, nb = _name_sequence(a), _name_sequence(b)
    if len(na) > 1 and sorted(na) == sorted(nb) and na != nb:
        return False  # the same names in another order: "Did Germany beat Brazil" vs "Did Brazil beat Germany"
    return not swapped(a, b)


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
