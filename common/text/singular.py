"""``pattern.en.singularize`` (Pattern 3.6) re-implemented, quirks included.

The canonical CHAIR script singularises every token with Pattern. Pattern is not installable here (it needs
MySQL client headers), so this module reproduces its decision procedure: compound words with a plural
preposition ("mothers-in-law"), genitive apostrophes, the uninflected / uncountable / "-ie" word lists (note:
Pattern tests whether the *list word ends with the token*, so e.g. "ears" is left alone because of "shears"),
irregular plurals (suffix match, so "women" -> "woman" and "four" -> "fmy" via "our" -> "my"), then the first
matching suffix rule. Consequences CHAIR relies on: "glass" -> "glas" (hence the "wine glas" merge), "bus" ->
"bu" (a singular "bus" is never an object), "cookies" stays "cookies", "ties" -> "ty", "people" -> "person".
"""
from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["singularize"]

_PLURAL_PREPOSITIONS = frozenset(
    "about before during of till above behind except off to across below for on under after beneath from onto "
    "until among beside in out unto around besides into over upon at between near since with athwart betwixt "
    "beyond but by".split())

_UNINFLECTED = frozenset(
    "bison debris headquarters pincers trout bream diabetes herpes pliers tuna breeches djinn high-jinks "
    "proceedings whiting britches eland homework rabies wildebeest carp elk innings salmon chassis flounder "
    "jackanapes scissors christmas gallows mackerel series clippers georgia measles shears cod graffiti mews "
    "species contretemps mumps swine corps news swiss".split())

_UNCOUNTABLE = frozenset(
    "advice equipment happiness luggage news software bread fruit information mathematics progress "
    "understanding butter furniture ketchup mayonnaise research water cheese garbage knowledge meat rice "
    "electricity gravel love mustard sand".split())

# "-ie" nouns: a token ending in one of these + "s" is returned unchanged (lower-cased). "^pie"/"^tie" keep
# Pattern's literal caret, so they never match.
_IE_PLURALS = tuple(x + "s" for x in (
    "alergie cutie hoagie newbie softie veggie auntie doggie hottie nightie sortie weenie beanie eyrie indie "
    "oldie stoolie yuppie birdie freebie junkie ^pie sweetie zombie bogie goonie laddie pixie techie bombie "
    "groupie laramie quickie ^tie collie hankie lingerie reverie toughie cookie hippie meanie rookie "
    "valkyrie").split())

# Irregular plurals, tried in this order as suffixes of the lower-cased token.
_IRREGULAR = (
    ("atlantes", "atlas"), ("atlases", "atlas"), ("axes", "axe"), ("beeves", "beef"), ("brethren", "brother"),
    ("children", "child"), ("corpora", "corpus"), ("corpuses", "corpus"), ("ephemerides", "ephemeris"),
    ("feet", "foot"), ("ganglia", "ganglion"), ("geese", "goose"), ("genera", "genus"), ("genii", "genie"),
    ("graffiti", "graffito"), ("helves", "helve"), ("kine", "cow"), ("leaves", "leaf"), ("loaves", "loaf"),
    ("men", "man"), ("mongooses", "mongoose"), ("monies", "money"), ("moves", "move"), ("mythoi", "mythos"),
    ("numena", "numen"), ("occipita", "occiput"), ("octopodes", "octopus"), ("opera", "opus"),
    ("opuses", "opus"), ("our", "my"), ("oxen", "ox"), ("penes", "penis"), ("penises", "penis"),
    ("people", "person"), ("sexes", "sex"), ("soliloquies", "soliloquy"), ("teeth", "tooth"),
    ("testes", "testis"), ("trilbys", "trilby"), ("turves", "turf"), ("zoa", "zoon"),
)

# Suffix rules, first match wins (an unmatched group in the replacement becomes "").
_RULES = tuple((re.compile(p), r) for p, r in (
    (r"(?i)(.)ae$", r"\1a"),
    (r"(?i)(.)itis$", r"\1itis"),
    (r"(?i)(.)eaux$", r"\1eau"),
    (r"(?i)(quiz)zes$", r"\1"),
    (r"(?i)(matr)ices$", r"\1ix"),
    (r"(?i)(ap|vert|ind)ices$", r"\1ex"),
    (r"(?i)^(ox)en", r"\1"),
    (r"(?i)(alias|status)es$", r"\1"),
    (r"(?i)([octop|vir])i$", r"\1us"),  # a character class in Pattern too
    (r"(?i)(cris|ax|test)es$", r"\1is"),
    (r"(?i)(shoe)s$", r"\1"),
    (r"(?i)(o)es$", r"\1"),
    (r"(?i)(bus)es$", r"\1"),
    (r"(?i)([m|l])ice$", r"\1ouse"),
    (r"(?i)(x|ch|ss|sh)es$", r"\1"),
    (r"(?i)(m)ovies$", r"\1ovie"),
    (r"(?i)(.)ombies$", r"\1ombie"),
    (r"(?i)(s)eries$", r"\1eries"),
    (r"(?i)([^aeiouy]|qu)ies$", r"\1y"),
    (r"([aeo]l)ves$", r"\1f"),
    (r"([^d]ea)ves$", r"\1f"),
    (r"arves$", "arf"),
    (r"erves$", "erve"),
    (r"([nlw]i)ves$", r"\1fe"),
    (r"(?i)([lr])ves$", r"\1f"),
    (r"([aeo])ves$", r"\1ve"),
    (r"(?i)(sive)s$", r"\1"),
    (r"(?i)(tive)s$", r"\1"),
    (r"(?i)(hive)s$", r"\1"),
    (r"(?i)([^f])ves$", r"\1fe"),
    (r"(?i)(^analy)ses$", r"\1sis"),
    (r"(?i)((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", r"\1\2sis"),
    (r"(?i)(.)opses$", r"\1opsis"),
    (r"(?i)(.)yses$", r"\1ysis"),
    (r"(?i)(h|d|r|o|n|b|cl|p)oses$", r"\1ose"),
    (r"(?i)(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", r"\1ose"),
    (r"(?i)(.)oses$", r"\1osis"),
    (r"(?i)([ti])a$", r"\1um"),
    (r"(?i)(n)ews$", r"\1ews"),
    (r"(?i)s$", ""),
))


@lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """The singular of ``word`` exactly as ``pattern.en.singularize(word)`` returns it."""
    if "-" in word:
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in _PLURAL_PREPOSITIONS:
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):
        return singularize(word[:-1]) + "'s"
    w = word.lower()
    if any(x.endswith(w) for x in _UNINFLECTED) or any(x.endswith(w) for x in _UNCOUNTABLE):
        return word
    if w.endswith(_IE_PLURALS):
        return w
    for plural, single in _IRREGULAR:
        if w.endswith(plural):
            return re.sub("(?i)" + plural + "$", single, word)
    for rx, repl in _RULES:
        if rx.search(word):
            return rx.sub(repl, word)
    return word
