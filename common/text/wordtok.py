"""``nltk.word_tokenize`` without nltk or its data files.

``nltk.word_tokenize(text)`` (NLTK 3.10) first splits ``text`` into sentences with the English Punkt model and then
runs ``NLTKWordTokenizer`` (an improved Treebank tokenizer, regexes only) on each sentence. The sentence split
matters for CHAIR: the Treebank rules detach only a *sentence-final* period, so without it "a dog. a cat" would
yield the token ``dog.`` and the object would be missed.

This module re-implements both stages. The Treebank stage is exact. The Punkt stage runs Punkt's decision
procedure with the English model's abbreviation list and *empty* collocation, sentence-starter and orthographic
tables (those tables are not available offline). On lower-cased text (which is all CHAIR and BLEU feed it) this
only differs from NLTK in rare corner cases: a number or single-letter initial followed by a lower-case word that
the WSJ training text only ever saw sentence-initially, and English-model collocations (pairs such as a number
followed by a month name). Neither moves a period away from an object word.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

__all__ = ["word_tokenize", "sent_tokenize", "treebank_tokenize"]

# ---------------------------------------------------------------------------------------------- Treebank stage
# NLTKWordTokenizer (nltk 3.10), applied in this order. Each rule carries the substrings it needs in order to
# match at all (None: always try it); the fast path skips a rule when none of them is present, which cannot
# change the result because the rule is checked against the text as it is at that point.
Rule = tuple[tuple[str, ...] | None, "re.Pattern[str]", str]
_RULES: list[Rule] = [
    # starting quotes
    (("«", "“", "‘", "„", "`"), re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (('"',), re.compile(r'^"'), r"``"),
    (("``",), re.compile(r"(``)"), r" \1 "),
    (('"', "''"), re.compile(r"""([ \(\[{<])("|'{2})"""), r"\1 `` "),
    (("'",), re.compile(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
    # punctuation
    ((".",), re.compile(r"""([^\.])(\.)([\]\)}>"'»”’ ]*)\s*$"""), r"\1 \2 \3 "),
    ((":", ","), re.compile(r"([:,])([^\d])"), r" \1 \2"),
    ((":", ","), re.compile(r"([:,])$"), r" \1 "),
    (("..",), re.compile(r"\.{2,}"), r" \g<0> "),
    ((";", "@", "#", "$", "%", "&"), re.compile(r"[;@#$%&]"), r" \g<0> "),
    (("\u2012", "\u2013", "\u2014", "\u2015"), re.compile("[\u2012-\u2015]"), r" \g<0> "),
    ((".",), re.compile(r"""([^\.])(\.)([\]\)}>"']*)\s*$"""), r"\1 \2\3 "),
    (("?", "!"), re.compile(r"[?!]"), r" \g<0> "),
    (("' ",), re.compile(r"([^'])' "), r"\1 ' "),
    (("*",), re.compile(r"[*]"), r" \g<0> "),
    # parentheses and brackets, double dashes
    (("[", "]", "(", ")", "{", "}", "<", ">"), re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),
    (("--",), re.compile(r"--"), r" -- "),
]
_ENDING_RULES: list[Rule] = [  # applied to " " + text + " "
    (("»", "”", "’"), re.compile("([»”’])"), r" \1 "),
    (("''",), re.compile(r"''"), " '' "),
    (('"',), re.compile(r'"'), " '' "),
    (None, re.compile(r"\s+"), " "),
    (("'",), re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (("'",), re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS = [re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
    r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)",
    r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b",
)]
# every contraction rule needs one of these (case-insensitively) to match
_CONTRACTION_HINT = re.compile(r"(?i)cannot|d'ye|gimme|gonna|gotta|lemme|more'n|wanna|'tis|'twas")


def _apply(rules: list[Rule], text: str, fast: bool) -> str:
    for need, rx, sub in rules:
        if not fast or need is None or any(n in text for n in need):
            text = rx.sub(sub, text)
    return text


def treebank_tokenize(text: str, fast: bool = True) -> list[str]:
    """NLTKWordTokenizer.tokenize (one sentence in, tokens out); ``fast=False`` tries every rule like NLTK."""
    text = _apply(_RULES, text, fast)
    text = _apply(_ENDING_RULES, " " + text + " ", fast)
    if not fast or _CONTRACTION_HINT.search(text):
        for rx in _CONTRACTIONS:
            text = rx.sub(r" \1 \2 ", text)
    return text.split()


# ------------------------------------------------------------------------------------------------ Punkt stage
# Abbreviation types of NLTK's English Punkt model (punkt_tab/english/abbrev_types.txt).
ENGLISH_ABBREVIATIONS = frozenset("""
ore d e.f dec f.g n.d mg n.j sen n g.d v h.f mrs d.h a.c m.b.a wed s.a prof vt e c.o.m.b u.n c.v ave p.m feb wis e.l
st d.c va calif w h fla dr l r colo a.h ms u.s.s.r l.a m r.j b.f n.m aug mich tues a.a j.p a.g rep s.c n.y r.a r.h sw
chg okla g.k ariz ok vs ft a.t s.g bros u.s.a ky i.m.s gen t reps e.h ala messrs s.a.y fri u.k jr inc ga ph.d sept ill
n.v c.i.t lt e.m j.c wash m.d.c kan r.t tenn k d.w jan w.w w.r r.i s.s l.f s.p.a pa b.v c w.c f r.k s g.f j.r w.va mr
corp f.j conn h.c a.m cos a.d j.j j.b yr col nov u.s a.m.e p.a.m cie n.h sep ct a.s m.j t.j h.m n.c adm l.p co minn
ltd p oct nev sr maj g j.k
""".split()) | {". . "}

_NON_WORD = "(?:[)\";}\\]\\*:@'\\({\\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"
_PUNKT_WORD = re.compile(
    "(" + _MULTI_CHAR + "|(?=" + _WORD_START + r")\S+?(?=\s|$|" + _NON_WORD + "|" + _MULTI_CHAR
    + r"|,(?=$|\s|" + _NON_WORD + "|" + _MULTI_CHAR + r"))|\S)")
_PERIOD_CONTEXT = re.compile(r"[\.\?!](?=(?P<after_tok>" + _NON_WORD + r"|\s+(?P<next_tok>\S+)))")
_REALIGN = re.compile("[\"')\\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\\s+|(?=--)|$)", re.MULTILINE)
_NUMERIC = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$")
_ELLIPSIS = re.compile(r"\.\.+$")
_SENT_END = (".", "?", "!")
_PUNCT = tuple(";:,.!?")


@dataclass
class _Tok:
    tok: str
    sentbreak: bool = False
    abbr: bool = False
    ellipsis: bool = False

    @property
    def type_no_period(self) -> str:
        t = _NUMERIC.sub("##number##", self.tok.lower())
        return t[:-1] if len(t) > 1 and t[-1] == "." else t


def _ortho_heuristic(tok: _Tok) -> bool | str:
    """Punkt's orthographic heuristic with an empty orthographic-context table."""
    if tok.tok in _PUNCT:
        return False
    if tok.tok[0].islower():
        return False
    return "unknown"


def _annotate(tokens: list[_Tok]) -> None:
    for t in tokens:  # first pass: type-based
        if t.tok in _SENT_END:
            t.sentbreak = True
        elif _ELLIPSIS.match(t.tok):
            t.ellipsis = True
        elif t.tok.endswith(".") and not t.tok.endswith(".."):
            stem = t.tok[:-1].lower()
            if stem in ENGLISH_ABBREVIATIONS or stem.split("-")[-1] in ENGLISH_ABBREVIATIONS:
                t.abbr = True
            else:
                t.sentbreak = True
    for t1, t2 in zip(tokens, tokens[1:]):  # second pass: token-based, needs the next token
        if not t1.tok.endswith("."):
            continue
        initial = _INITIAL.match(t1.tok) is not None
        if (t1.abbr or t1.ellipsis) and not initial:
            if _ortho_heuristic(t2) is True:
                t1.sentbreak = True
                continue
        if initial or t1.type_no_period == "##number##":
            starter = _ortho_heuristic(t2)
            if starter is False or (starter == "unknown" and initial and t2.tok[0].isupper()):
                t1.sentbreak = False
                t1.abbr = True


def _contains_sentbreak(context: str) -> bool:
    tokens = [_Tok(w) for line in context.split("\n") if line.strip() for w in _PUNKT_WORD.findall(line)]
    _annotate(tokens)
    return any(t.sentbreak for t in tokens[:-1])


def _last_whitespace_index(text: str) -> int:
    for i in range(len(text) - 1, -1, -1):
        if text[i] in string.whitespace:
            return i
    return 0


def _end_contexts(text: str):
    prev_slice, prev_match = slice(0, 0), None
    for match in _PERIOD_CONTEXT.finditer(text):
        before = text[prev_slice.stop:match.start()]
        idx = _last_whitespace_index(before)
        start = idx + prev_slice.stop + 1 if idx else prev_slice.start
        word_slice = slice(start, match.start())
        if prev_match and prev_slice.stop <= word_slice.start:
            yield prev_match, text[prev_slice] + prev_match.group() + prev_match.group("after_tok")
        prev_match, prev_slice = match, word_slice
    if prev_match:
        yield prev_match, text[prev_slice] + prev_match.group() + prev_match.group("after_tok")


def _sentence_slices(text: str) -> list[slice]:
    slices, last = [], 0
    for match, context in _end_contexts(text):
        if _contains_sentbreak(context):
            slices.append(slice(last, match.end()))
            last = match.start("next_tok") if match.group("next_tok") else match.end()
    slices.append(slice(last, len(text.rstrip())))
    out, realign = [], 0
    for i, s1 in enumerate(slices):
        s1 = slice(s1.start + realign, s1.stop)
        if i + 1 == len(slices):
            if text[s1]:
                out.append(s1)
            continue
        s2 = slices[i + 1]
        m = _REALIGN.match(text[s2])
        if m:
            out.append(slice(s1.start, s2.start + len(m.group(0).rstrip())))
            realign = m.end()
        else:
            realign = 0
            if text[s1]:
                out.append(s1)
    return out


def sent_tokenize(text: str) -> list[str]:
    """Punkt sentence split (English abbreviations; see the module docstring for the approximation)."""
    if not any(c in text for c in _SENT_END):
        stripped = text.rstrip()
        return [stripped] if stripped else []
    return [text[s] for s in _sentence_slices(text)]


def word_tokenize(text: str, fast: bool = True) -> list[str]:
    """Tokens as ``nltk.word_tokenize(text)`` gives them (``fast`` skips rules that cannot match)."""
    return [tok for sent in sent_tokenize(text) for tok in treebank_tokenize(sent, fast)]
