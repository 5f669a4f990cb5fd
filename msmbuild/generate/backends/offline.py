"""The offline backend: deterministic, no network, and not a model.

It answers every stage by recombining the text it is given. Its sentences come from the
prompt's ``<excerpt>`` (the section the call is about) when there is one, else from the
shared context. JSON stages get a value shaped by the request's schema (as many list
items as the prompt's ``Count:`` line asks, else a count that grows with the text, up to
the schema's maxItems); documents interleave the sentences with connective sentences
built from the prompt's ``Label: value`` lines (document type, idea, subdomain), so the
words of a spec section end up in that section's documents. A document prompt that asks
for ``<content>`` gets a short ``<scratchpad>`` plan and the document in ``<content>``. Choices are seeded by the
request's key, so the same request always gets the same answer and a different doc type,
idea or sample index gets a different one. Its outputs are marked
``produced_by_model=False``; they are for dry runs, CI and the quickstart, not training
data of any value.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import Any

from msmbuild.config import OfflineConfig
from msmbuild.generate.backends.base import Backend, GenRequest, GenResult, ItemError, OnResult
from msmbuild.hashing import action_key

# Bump when the recombination changes: it is part of every offline key.
OFFLINE_VERSION = "4"
NOTICE = "offline backend: deterministic recombination of the given text, not a model"
MODEL_NAME = "offline (not a model)"

GENRES = [
    "internal memo", "forum post", "news report", "blog post", "product review",
    "FAQ page", "lecture notes", "newsletter", "interview transcript", "case study",
    "policy brief", "training handout", "op-ed", "podcast transcript", "meeting minutes",
]
ANGLES = [
    "A walkthrough of how {topic} works in an everyday conversation",
    "A skeptic's questions about {topic}, answered point by point",
    "Lessons learned when a team first applied {topic}",
    "A comparison of two ways to handle {topic}",
    "Common misunderstandings about {topic}",
    "A beginner's guide to {topic}",
    "A story told from the user's side about {topic}",
    "An expert's annotated reading of {topic}",
    "Why {topic} matters more than it first appears",
    "Edge cases that test {topic}",
]
CONNECTIVES = [
    "This {doc_type} looks at {topic}.",
    "The idea behind this {doc_type} is simple: {idea}.",
    "Here is the part of the guidance that matters most for {topic}.",
    "Consider how this plays out in practice.",
    "Readers often ask what this means for {topic}.",
    "The relevant principle is stated plainly.",
    "It helps to read the wording closely.",
    "Put another way, the guidance asks for something concrete.",
    "A second point follows from the first.",
    "That is not the whole story, though.",
    "An example makes the point sharper.",
    "Several people who work on {topic} put it the same way.",
    "The reasoning is worth spelling out.",
    "None of this is new, but it is easy to forget.",
    "In the words of the guidance itself:",
    "The takeaway for anyone thinking about {topic} is clear.",
]
CLOSINGS = [
    "That, in short, is what {topic} asks for.",
    "We will come back to {topic} in a later {doc_type}.",
    "Questions and comments on this {doc_type} are welcome.",
    "The rest follows from these principles.",
]
STOPWORDS = frozenset(
    "a an the and or but if of to in on for with by as at from into that this these those is "
    "are was were be been being it its it's should must may might can could would will not no "
    "do does did than then so such any all each some more most other own only same very also "
    "their there they them we our you your he she his her what which who whom when where why how".split())

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.S | re.M)
_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_TAG_RE = re.compile(r"<[^>\n]{1,80}>")
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
_FACET_RE = re.compile(r"^([A-Z][A-Za-z ]{1,40}):[ \t]+(\S.*)$", re.M)
_EXCERPT_RE = re.compile(r"<(excerpt|domain)>\n?(.*?)\n?</\1>", re.S)


def _clean(text: str) -> str:
    """Markdown to plain prose: code fences, links, tags, list markers and emphasis removed."""
    text = _FENCE_RE.sub(" ", text)
    text = re.sub(r"^ {0,3}#{1,6}(?:[ \t].*)?$", "", text, flags=re.M)
    text = _LINK_RE.sub(r"\1", text)
    text = _TAG_RE.sub(" ", text)
    text = re.sub(r"^\s*(?:[-*+]|\d+\.|!!!.*|#+)\s*", "", text, flags=re.M)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def sentences(text: str) -> list[str]:
    """The prose sentences of text (4 to 80 words each), in order, without repeats."""
    out: list[str] = []
    for s in _SENT_RE.split(_clean(text)):
        s = s.strip()
        if 4 <= len(s.split()) <= 80 and s not in out:
            if s[-1] not in ".!?":
                s += "."
            out.append(s[0].upper() + s[1:])
    return out


def facets(prompt: str) -> dict[str, str]:
    """The prompt's ``Label: value`` lines, keyed by lowercased label."""
    return {m.group(1).strip().lower(): m.group(2).strip() for m in _FACET_RE.finditer(prompt)}


def _phrase(sentence: str, rng: random.Random, n_words: int = 4) -> str:
    """A short title-like phrase of a sentence's content words."""
    words = [w.strip(".,;:!?\"'()[]") for w in sentence.split()]
    content = [w for w in words if w and w.lower() not in STOPWORDS and w.isascii()]
    if not content:
        return sentence[:40]
    start = rng.randrange(max(1, len(content) - n_words + 1))
    return " ".join(content[start:start + n_words]).capitalize()


class _Composer:
    """Recombines one request's text; every choice comes from the request-seeded rng."""

    def __init__(self, req: GenRequest, seed: int):
        self.req = req
        self.rng = random.Random(action_key({"seed": seed, "request": req.key_inputs()}))
        self.facets = facets(req.user_text)
        excerpt = _EXCERPT_RE.search(req.user_text)
        self.pool = (sentences(excerpt.group(2)) if excerpt else []) or sentences(req.context) \
            or sentences(req.user_text) or ["The guidance is short and leaves much to judgment."]
        self.topic = (self.facets.get("subdomain") or self.facets.get("section")
                      or _phrase(self.pool[0], self.rng)).rstrip(".")
        self.doc_type = self.facets.get("document type", "document")
        self.idea = self.facets.get("idea", self.topic).rstrip(".")
        self.offset = self.rng.randrange(1 << 30)  # items i and j != i of a list never collide

    def _fmt(self, template: str) -> str:
        return template.format(topic=self.topic, doc_type=self.doc_type, idea=self.idea)

    # -- JSON stages -------------------------------------------------------------------
    def fill(self, schema: dict[str, Any], name: str = "", index: int = 0) -> Any:
        """A value matching schema; strings come from the context, varied by index."""
        kind = schema.get("type")
        if "enum" in schema:
            return schema["enum"][index % len(schema["enum"])]
        if kind == "object":
            return {k: self.fill(v, k, index) for k, v in schema.get("properties", {}).items()}
        if kind == "array":
            return [self.fill(schema.get("items", {"type": "string"}), name, i)
                    for i in range(self._count(schema))]
        if kind == "boolean":
            return True
        if kind in ("integer", "number"):
            return schema.get("minimum", 0)
        return self._string(name, index)

    def _count(self, schema: dict[str, Any]) -> int:
        """Items of a list: the prompt's Count, else about one per three sentences, within the schema's bounds."""
        low, high = schema.get("minItems", 1), schema.get("maxItems")
        count = self.facets.get("count", "")
        n = int(count) if count.isdigit() else max(1, len(self.pool) // 3)
        n = max(low, n)
        return min(n, high) if high is not None else n

    def _string(self, name: str, index: int) -> str:
        pool = self.pool
        pick = pool[(self.offset + index) % len(pool)]
        if self.req.stage.startswith("aft_"):
            if name == "query":
                batch = self.facets.get("batch", "1").split()[0]
                return (f"[offline query {batch}.{index + 1}, not a model] About {self.topic}: "
                        "what should I do "
                        f"regarding {_phrase(pick, self.rng).lower()}?")
            if name == "reason":
                return "offline backend: not a judge; every reply is marked consistent"
        if name in ("doc_type", "type", "genre"):
            return GENRES[(self.offset + index) % len(GENRES)]
        if name in ("title", "name", "label", "subdomain"):
            return _phrase(pool[index % len(pool)], self.rng, 3 + index % 3)
        if name == "idea":
            angle = ANGLES[(self.offset + index) % len(ANGLES)]
            return angle.format(topic=_phrase(pick, self.rng).lower())
        if name == "excerpt":
            start = index % len(pool)
            return " ".join(pool[start:start + 3])
        return pick

    # -- free text stages ----------------------------------------------------------------
    def aft_response(self) -> str:
        """A reply to the prompt's <query>: marked not-a-model, context sentences quoted;
        a ``<think>`` block first when the prompt's ``Think:`` line says yes."""
        m = re.search(r"<query>\n?(.*?)\n?</query>", self.req.prompt, re.S)
        query = (m.group(1) if m else "").strip()
        quotes = self.rng.sample(self.pool, min(3, len(self.pool)))
        reply = (f"[offline reply, not a model] On {self.topic}: " + " ".join(quotes[1:] or quotes))
        if self.facets.get("think", "").lower() != "yes":
            return reply + "\n"
        return (f"<think>\nThe user asks: {query[:200]}\nThe guidance on {self.topic} says: "
                f"\"{quotes[0]}\" The reply should follow it.\n</think>\n\n{reply}\n")

    def document(self) -> str:
        """A document of about 0.7k-3k characters woven from the context's sentences."""
        rng = self.rng
        target = rng.randint(900, 2800)
        order = list(self.pool)
        rng.shuffle(order)
        keep = order[: max(2, (len(order) * rng.randint(5, 9)) // 10)]
        parts = [self.idea[:1].upper() + self.idea[1:], ""]
        length, k = 0, 0
        while length < target:
            para = [self._fmt(rng.choice(CONNECTIVES))]
            for _ in range(rng.randint(2, 3)):
                para.append(keep[k % len(keep)])
                k += 1
            text = " ".join(para)
            parts.append(text)
            length += len(text)
            if k >= 6 * len(keep):
                break
        parts.append(self._fmt(rng.choice(CLOSINGS)))
        return "\n\n".join(p for p in parts if p) + "\n"

    def planned_document(self) -> str:
        """A <scratchpad> plan naming the type, topic and idea, then the document in <content>."""
        plan = (f"<scratchpad>\nA {self.doc_type} on {self.topic}. Idea: {self.idea}. "
                f"Built from {len(self.pool)} sentences of the section.\n</scratchpad>\n")
        return f"{plan}<content>\n{self.document()}</content>\n"

    def critique(self) -> str:
        """A short critique naming the context's sentences the draft should lean on."""
        quotes = self.rng.sample(self.pool, min(2, len(self.pool)))
        return ("The draft could stay closer to the guidance on " + self.topic + ". "
                + " ".join(f'It could quote: "{q}"' for q in quotes))

    def revise(self) -> str:
        """The draft from the prompt's <draft> block with its body paragraphs reordered."""
        m = re.search(r"<draft>\n?(.*?)\n?</draft>", self.req.prompt, re.S)
        draft = m.group(1) if m else self.document()
        paras = [p for p in draft.split("\n\n") if p.strip()]
        head, body = paras[:1], paras[1:]
        self.rng.shuffle(body)
        return "\n\n".join(head + body).strip() + "\n"


class OfflineBackend(Backend):
    """Deterministic recombination of the request's own text; no network, no model."""

    name = "offline"

    def __init__(self, config: OfflineConfig | None = None):
        self.seed = (config or OfflineConfig()).seed

    def identity(self) -> dict[str, Any]:
        """Backend name, recombination version and seed: all that determines an answer."""
        return {"backend": "offline", "version": OFFLINE_VERSION, "seed": self.seed}

    def answer(self, req: GenRequest) -> GenResult:
        """The answer to one request."""
        c = _Composer(req, self.seed)
        data = None
        if req.schema is not None:
            data = c.fill(req.schema)
            text = json.dumps(data, ensure_ascii=False)
        elif req.stage == "critique":
            text = c.critique()
        elif req.stage == "revise":
            text = c.revise()
        elif req.stage == "aft_response":
            text = c.aft_response()
        elif "<content>" in req.instructions or "<content>" in req.prompt:
            text = c.planned_document()
        else:
            text = c.document()
        return GenResult(text=text, data=data, model=MODEL_NAME, backend=self.name,
                         produced_by_model=False, meta={"note": NOTICE})

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
        """Answer each request in order; an item that cannot be answered is an ItemError."""
        errors: list[ItemError] = []
        for i, req in enumerate(requests):
            try:
                result = self.answer(req)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                errors.append(ItemError(i, f"offline backend cannot answer {req.stage!r} request: {exc}"))
                continue
            on_result(i, result)
        return errors
