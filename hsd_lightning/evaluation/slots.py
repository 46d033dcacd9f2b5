"""E2E slot error rate (SER): does a text say what its meaning representation (MR) says?

A rule-based slot matcher in the way the E2E literature computes SER (Dušek et al., "Semantic noise matters for
neural NLG", 2019): every slot of the MR is looked for in the text, values through their usual paraphrases, and is

* ``ok``: the MR's value is said (``familyFriendly[yes]`` as "family friendly", "kid friendly", "children are
  welcome"; ``priceRange[less than £20]`` as "cheap" too; ``customer rating[5 out of 5]`` as "highly rated" too);
* ``wrong``: another value of the slot is said, alone or beside the MR's ("a family-friendly pub ... It is not
  family-friendly" for ``familyFriendly[no]``), or a venue name is only said mangled ("Raja Cuisine Cuisine");
* ``missed``: the slot is not said;

and a slot that is not in the MR but is said counts as ``added``.  SER = (missed + wrong + added) / MR slots.
Repeating a value that is said correctly is not a slot error here: ``evaluation/fidelity.py`` counts repetition.

Written by hand because no library we use has one: the E2E ontology is closed (8 slots, values below), so patterns
per value are what the published scripts do too. ``docs/results/e2e/slot_errors_hand.jsonl`` holds hand labels for
64 outputs of four decoders; ``tests/test_fidelity.py`` checks the matcher's agreement with them.
"""
from __future__ import annotations

import re

MR_SLOT = re.compile(r"([A-Za-z][A-Za-z ]*?)\s*\[([^\]]*)\]")

# every restaurant name and "near" landmark of the E2E ontology (train, dev and test); a mention of one that is not
# the MR's own name or near is a wrong or added venue
E2E_VENUES = (
    "Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Browns Cambridge", "Clowns", "Cocum", "Cotto",
    "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne", "Midsummer House", "Strada", "Taste of Cambridge",
    "The Cambridge Blue", "The Cricketers", "The Dumpling Tree", "The Eagle", "The Golden Curry", "The Golden Palace",
    "The Mill", "The Olive Grove", "The Phoenix", "The Plough", "The Punter", "The Rice Boat", "The Twenty Two",
    "The Vaults", "The Waterman", "The Wrestlers", "Travellers Rest Beefeater", "Wildwood", "Zizzi",
    "All Bar One", "Avalon", "Burger King", "Café Adriatic", "Café Brazil", "Café Rouge", "Café Sicilia", "Clare Hall",
    "Crowne Plaza Hotel", "Express by Holiday Inn", "Rainbow Vegetarian Café", "Raja Indian Cuisine", "Ranch",
    "The Bakers", "The Portland Arms", "The Six Bells", "The Sorrento", "Yippee Noodle Bar",
)

_NEG = r"(?:not|n't|non|no|never|isn't|aren't|doesn't|don't|un)"

# slot -> value class -> patterns on the lower-cased text with venue names masked; an MR value maps to its class
# (``VALUE_CLASS``), so "less than £20" and "cheap" are one class, as a reader takes them
PATTERNS: dict[str, dict[str, list[str]]] = {
    "eatType": {
        "pub": [r"\bpubs?\b"],
        "coffee shop": [r"\bcoffee[- ]?(?:shop|house|bar)s?\b", r"\bcaf[eé]s?\b"],
        "restaurant": [r"\brestaurants?\b", r"\bdiners?\b", r"\beater(?:y|ies)\b", r"\bbistros?\b"],
    },
    "food": {
        "chinese": [r"\bchinese\b"], "english": [r"\benglish\b", r"\bbritish\b"], "french": [r"\bfrench\b"],
        "indian": [r"\bindian\b"], "italian": [r"\bitalian\b", r"\bpasta\b", r"\bpizzas?\b"],
        "japanese": [r"\bjapanese\b", r"\bsushi\b"], "fast food": [r"\bfast[- ]?food\b", r"\bburgers?\b"],
    },
    "area": {
        "city centre": [r"\bcity[- ]?cent(?:re|er)\b", r"\bcent(?:re|er) of (?:the )?(?:city|town)\b",
                        r"\btown cent(?:re|er)\b", r"\bdowntown\b", r"\bcity'?s? cent"],
        "riverside": [r"\briver(?:side)?\b", r"\bwaterfront\b", r"\briverbank\b"],
    },
    "priceRange": {
        "cheap": [r"less than £ ?20\b", r"\b(?:under|below) £ ?20\b", r"£ ?20 or (?:less|under)\b",
                  r"\bcheap(?:ly|er|est)?\b", r"\binexpensive\b", r"\baffordabl[ey]\b", r"\bbudget\b",
                  r"\blow(?:er)?[- ]?(?:cost|price[ds]?|priced)\b", r"\bprices? (?:range )?(?:is |are )?low\b",
                  r"\blow price range\b"],
        "moderate": [r"£ ?20 ?(?:-|–|to) ?(?:£ ?)?25\b", r"\bmoderate(?:ly)?\b", r"\baverage[- ]price",
                     r"\bmid[- ]?(?:range|price[ds]?|priced)\b", r"\breasonabl[ey]\b",
                     r"\bprices? (?:range )?(?:is |are )?(?:average|moderate)\b"],
        "high": [r"(?:more than|over|above) £ ?30\b", r"£ ?30 (?:or more|plus)\b", r"\bexpensive\b", r"\bpricey\b",
                 r"\bcostly\b", r"\bhigh[- ]?(?:end|cost|price[ds]?|priced)\b", r"\bhigh price range\b",
                 r"\bprices? (?:range )?(?:is |are )?high\b"],
    },
    "customer rating": {  # "N out of 5" is read by _RATING_NUMBER
        "low": [r"\b(?:1|one)[- ]stars?\b", r"\b(?:poorly|badly|low(?:ly)?)[- ]rated\b"],
        "average": [r"\b(?:3|three)[- ]stars?\b", r"\baverage(?:ly)?[- ]rated\b"],
        "high": [r"\b(?:5|five)[- ]stars?\b", r"\b(?:highly|well|high)[- ]rated\b"],
        "other": [r"\b(?:2|4|two|four)[- ]stars?\b"],
    },
}
# "N out of 5", left to right without overlaps: the repeat "3 out of 5 out of 5" says 3, not 3 and 5
_RATING_NUMBER = re.compile(r"\b([1-5]) ?(?:out of|/) ?5\b")
_RATING_CLASS = {"1": "low", "3": "average", "5": "high", "2": "other", "4": "other"}
# "low / average / high" next to "rating" (not next to "price"): "an average customer rating", "rated high",
# "customer rating is low"
_RATING_WORD = [re.compile(r"\b(low|average|high)\b(?![- ]?(?:price|priced|prices|cost))[^.,;]{0,24}?\brat(?:ing|ed)"),
                re.compile(r"\brat(?:ing|ings|ed)\b(?: (?:is|of|as))? (low|average|high)\b(?![- ]?(?:price|cost))")]
_FAMILY = re.compile(r"\b(?:family|kids?|child|children|children's)[- ]?friendly\b"
                     r"|\b(?:children|kids|families) (?:are )?welcome\b|\bwelcomes? (?:children|kids|families)\b"
                     r"|\bfor (?:the whole )?famil(?:y|ies)\b|\bfamily (?:place|restaurant|venue|pub)\b")
_NO_FAMILY = re.compile(r"\badults? only\b|\bno (?:children|kids)\b|\bnot (?:for|suitable for|allow) "
                        r"(?:children|kids|families)\b")
VALUE_CLASS = {"less than £20": "cheap", "£20-25": "moderate", "more than £30": "high",
               "1 out of 5": "low", "3 out of 5": "average", "5 out of 5": "high"}
SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")


def parse_mr(text: str) -> dict[str, str] | None:
    """``name[X], eatType[pub], ...`` (with or without an ``Attributes:`` prefix) -> ``{slot: value}``; None when
    the text is not an MR of known slots."""
    pairs = MR_SLOT.findall(text)
    if not pairs:
        return None
    mr = {k.strip(): v.strip() for k, v in pairs}
    return mr if set(mr) <= set(SLOTS) and "name" in mr else None


def _value_class(slot: str, value: str) -> str:
    v = value.lower()
    return VALUE_CLASS.get(v, v) if slot in ("priceRange", "customer rating") else v


def _venue_pattern(name: str) -> re.Pattern:
    """A venue name as a whole phrase, any case, its leading "The" optional ("near the Rice Boat", "Rice Boat")."""
    words = name.split()
    if words[0].lower() == "the":
        words = words[1:]
    return re.compile(r"(?<![\w])(?:the )?" + r"\s+".join(map(re.escape, words)) + r"(?![\w])", re.IGNORECASE)


_VENUE_RE = {v: _venue_pattern(v) for v in E2E_VENUES}
# a run of two or more capitalised words: where a mangled venue name is ("Raja Cuisine Cuisine", "Rainbow Veget Café")
_CAPITALISED_RUN = re.compile(r"[A-Z\u00c0-\u00de][\w'’]*(?:\s+(?:by\s+|of\s+)?[A-Z\u00c0-\u00de][\w'’]*)+")
_MASK = "\x00"  # stands for a venue name once it is read, so that no run or pattern reaches across it


def _distinctive(name: str) -> set[str]:
    return {w.lower() for w in name.split() if len(w) > 2 and w.lower() not in ("the", "by", "of")}


def _family_values(text: str) -> set[str]:
    """'yes' / 'no' for every family-friendliness statement; a negation in the same clause, at most three words
    before the phrase, makes it 'no'."""
    found = set()
    for m in _FAMILY.finditer(text):
        before = re.split(r"[.,;:!?]", text[:m.start()])[-1].split()[-3:]
        negated = any(re.fullmatch(_NEG, w) or w.endswith("n't") for w in before) or \
            re.search(r"\b(?:non|un)[- ]?$", text[:m.start()])
        found.add("no" if negated else "yes")
    if _NO_FAMILY.search(text):
        found.add("no")
    return found


def _found(slot: str, text: str) -> set[str]:
    if slot == "familyFriendly":
        return _family_values(text)
    out = {cls for cls, pats in PATTERNS[slot].items() if any(re.search(p, text) for p in pats)}
    if slot == "customer rating":
        out |= {m.group(1) for r in _RATING_WORD for m in r.finditer(text)}
        out |= {_RATING_CLASS[m.group(1)] for m in _RATING_NUMBER.finditer(text)}
    return out


def match_slots(mr: dict[str, str], text: str, venues: tuple[str, ...] = E2E_VENUES) -> dict:
    """``{"slots": {slot: "ok" | "missed" | "wrong"}, "added": [slot, ...]}`` for one text and its MR."""
    t = " ".join(text.replace("’", "'").split())
    slots: dict[str, str] = {}
    # venues first, longest names first ("Rainbow Vegetarian Café" before "Café ..."), then masked so that "Raja
    # Indian Cuisine" is no food and "Café Rouge" no coffee shop
    own = {s: mr[s] for s in ("name", "near") if s in mr}
    said_own, others = set(), []
    for venue in sorted(set(venues) | set(own.values()), key=len, reverse=True):
        pat = _VENUE_RE.get(venue) or _venue_pattern(venue)
        if pat.search(t):
            (said_own.add(venue) if venue in own.values() else others.append(venue))
            t = pat.sub(f" {_MASK} ", t)
    # a capitalised run with a word of an own venue name is that name again, cut or mangled ("near Raja Indian"): it
    # is masked too, and when the name is not said whole anywhere, the slot is wrong rather than missed
    mangled = set()
    for run in _CAPITALISED_RUN.findall(t):
        words = {w.lower() for w in run.split()}
        hit = [v for v in own.values() if words & _distinctive(v)]
        if hit:
            mangled.update(v for v in hit if v not in said_own)
            t = t.replace(run, f" {_MASK} ", 1)
    t = t.lower()
    spare = len(others)  # other venues said: each one is a wrong name/near, or an added near
    for s in ("name", "near"):
        if s in own:
            if own[s] in said_own:
                slots[s] = "ok"
            elif own[s] in mangled:
                slots[s] = "wrong"
            elif spare:
                slots[s], spare = "wrong", spare - 1
            else:
                slots[s] = "missed"
    added = ["near"] if spare and "near" not in mr else []
    for s in SLOTS:
        if s in ("name", "near"):
            continue
        found = _found(s, t)
        if s in mr:
            want = _value_class(s, mr[s])
            slots[s] = "missed" if not found else "ok" if found == {want} else "wrong"
        elif found:
            added.append(s)
    return {"slots": {s: slots[s] for s in mr}, "added": added}


def slot_counts(mr: dict[str, str], text: str) -> dict[str, int]:
    """``{"slots", "missed", "wrong", "added"}`` counts for one text."""
    m = match_slots(mr, text)
    vals = list(m["slots"].values())
    return {"slots": len(vals), "missed": vals.count("missed"), "wrong": vals.count("wrong"), "added": len(m["added"])}
