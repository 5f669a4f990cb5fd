"""Lexical measures of overlap between an eval item and a training text.

Two measures, both deterministic and dependency-free beyond numpy/scipy:

- the longest run of consecutive words an item shares with a training chunk (verbatim
  copying; words are lowercased alphanumeric tokens, punctuation ignored);
- the cosine similarity of content-word profiles (unigrams and bigrams of lowercased words
  with stop words removed and a plural ``s`` stripped, sublinear term frequency). This is the
  fallback for semantic similarity when no embedding model is configured: it catches
  paraphrases that reuse the same content words in a different order, not paraphrases that
  change every word (only an embedding model can).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

WORD_RE = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")

# A short function-word list: enough that two texts do not look alike for sharing "the" and
# "of"; deliberately without content words, which are what a leak shares.
STOP_WORDS = frozenset("""
a an the and or but if then than so of to in on at by for with from into over under about
as is are was were be been being it its this that these those there here which who whom
whose what when where why how do does did done have has had not no nor can could would
should will shall may might must i you he she we they me him her us them my your his our
their one ones more most less very just also too only own same such some any each every
all both other which while do you prefer rather would
""".split())


def words(text: str) -> list[str]:
    """Lowercased word tokens (letters/digits, inner apostrophes and hyphens kept)."""
    return WORD_RE.findall(text.lower())


def content_terms(text: str) -> Counter[str]:
    """Unigram and bigram counts of content words (stop words dropped, plural s stripped)."""
    toks = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in words(text) if w not in STOP_WORDS]
    grams = Counter(toks)
    grams.update(f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False))
    return grams


def _weights(counts: Counter[str]) -> dict[str, float]:
    """Sublinear term frequency, L2-normalized."""
    raw = {t: 1.0 + math.log(c) for t, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in raw.values())) or 1.0
    return {t: v / norm for t, v in raw.items()}


class LexicalIndex:
    """Training chunks indexed for longest-shared-run and content-cosine queries."""

    def __init__(self, chunks: Sequence[str], max_ngram: int) -> None:
        self.chunks = list(chunks)
        self.max_ngram = max_ngram
        self._grams: dict[tuple[str, ...], int] = {}
        self._vectors = [_weights(content_terms(c)) for c in self.chunks]
        self._postings: dict[str, list[int]] = {}
        for i, chunk in enumerate(self.chunks):
            toks = words(chunk)
            for n in range(1, max_ngram + 1):
                for j in range(len(toks) - n + 1):
                    self._grams.setdefault(tuple(toks[j:j + n]), i)
            for term in self._vectors[i]:
                self._postings.setdefault(term, []).append(i)

    def longest_run(self, text: str) -> tuple[int, str, int | None]:
        """(length in words, the shared words, chunk index) of the longest shared run."""
        toks = words(text)
        for n in range(min(self.max_ngram, len(toks)), 0, -1):
            for j in range(len(toks) - n + 1):
                gram = tuple(toks[j:j + n])
                if gram in self._grams:
                    return n, " ".join(gram), self._grams[gram]
        return 0, "", None

    def most_similar(self, text: str) -> tuple[float, int | None]:
        """(cosine, chunk index) of the chunk whose content-word profile is closest."""
        query = _weights(content_terms(text))
        scores: dict[int, float] = {}
        for term, w in query.items():
            for i in self._postings.get(term, ()):
                scores[i] = scores.get(i, 0.0) + w * self._vectors[i][term]
        if not scores:
            return 0.0, None
        best = max(scores, key=lambda i: (scores[i], -i))
        return scores[best], best


def chunk_text(text: str, max_words: int) -> list[str]:
    """Sentence-aligned windows of at most max_words words (a long sentence is split)."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*[-*#])", text) if s.strip()]
    chunks: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        toks = sentence.split()
        while len(toks) > max_words:
            if current:
                chunks.append(" ".join(current))
                current = []
            chunks.append(" ".join(toks[:max_words]))
            toks = toks[max_words:]
        if current and len(current) + len(toks) > max_words:
            chunks.append(" ".join(current))
            current = []
        current.extend(toks)
    if current:
        chunks.append(" ".join(current))
    return chunks


def term_mentions(text: str, terms: Iterable[str]) -> list[tuple[str, int]]:
    """(term, character offset) of every whole-word mention of any term (case-insensitive)."""
    found = []
    for term in terms:
        pattern = r"(?<![A-Za-z0-9])" + re.escape(term.lower()).replace(r"\ ", r"\s+") + r"(?![A-Za-z0-9])"
        found.extend((term, m.start()) for m in re.finditer(pattern, text.lower()))
    return sorted(found, key=lambda x: x[1])
