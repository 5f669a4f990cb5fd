"""Prompt caching facts: the minimum cacheable prefix per model, and how prefixes are measured.

``split_input`` is how a request's input divides into plain, cache-write and cache-read
tokens with several breakpoints (the API's rule: the longest marked prefix already cached
is read, the rest up to the last marked prefix is written, what follows is plain input).
The loopback server bills by it and ``msmbuild plan`` prices by it, on the same params.

The Messages API caches a prefix (tools, then system blocks up to a ``cache_control``
mark) only when it reaches a model-dependent minimum; below it the request succeeds,
nothing is cached and both cache counters stay 0. No maintained library carries these
numbers, so they are written here from Anthropic's prompt-caching documentation
(platform.claude.com/docs/en/build-with-claude/prompt-caching, read 2026-11-30). The
backend marks a prefix only when it is long enough; the loopback server enforces the same
table, so a test sees it when a marked prefix is too short.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

__all__ = ["CHARS_PER_TOKEN", "DEFAULT_MIN_CACHEABLE_TOKENS", "CacheSplit", "estimated_tokens", "input_blocks",
           "min_cacheable_tokens", "split_input"]

CHARS_PER_TOKEN = 4  # a low estimate of tokens (real English text runs nearer 3.5 characters a token)

# Longest matching model-id prefix wins.
_MIN_CACHEABLE: dict[str, int] = {
    "claude-opus-5": 512, "claude-fable-5": 512, "claude-mythos-5": 512,
    "claude-sonnet-5": 1024, "claude-haiku-5": 4096,
    "claude-opus-4-8": 1024, "claude-opus-4-7": 2048, "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096, "claude-opus-4-1": 1024, "claude-opus-4": 1024,
    "claude-sonnet-4-6": 1024, "claude-sonnet-4-5": 1024, "claude-sonnet-4": 1024,
    "claude-haiku-4-5": 4096, "claude-3-5-haiku": 2048, "claude-3-haiku": 2048,
}
DEFAULT_MIN_CACHEABLE_TOKENS = 4096  # the largest minimum: an unknown model is never over-marked


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix, in tokens, that the model's prompt cache accepts."""
    best = max((p for p in _MIN_CACHEABLE if model.startswith(p)), key=len, default=None)
    return _MIN_CACHEABLE[best] if best is not None else DEFAULT_MIN_CACHEABLE_TOKENS


def estimated_tokens(text: str) -> int:
    """Tokens of text by the character estimate that both the backend and the loopback server use."""
    return len(text) // CHARS_PER_TOKEN


@dataclass(frozen=True)
class CacheSplit:
    """A request's input tokens: plain, written to the cache, read from it; the entries it writes."""

    plain: int
    write: int
    read: int
    new_entries: tuple[str, ...] = ()
    marked_short: bool = False  # a cache mark on a prefix below the model's minimum


def input_blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The text blocks of Messages params in prefix order: system blocks, then message content."""
    system = params.get("system") or []
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
    for message in params.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            blocks.append({"type": "text", "text": content})
        else:
            blocks.extend(b if isinstance(b, dict) else {"text": str(b)} for b in content or [])
    return blocks


def split_input(model: str, tools: str, blocks: Sequence[tuple[str, bool]], cached: Container[str],
                minimum: int | None = None) -> CacheSplit:
    """Split a request's input (tools text, then (text, marked) blocks) by what the cache holds.

    Each marked block ends a prefix; one that reaches the model's minimum is a cache entry.
    The longest entry in ``cached`` is read; the tokens from it to the last entry are
    written (when that entry is not cached yet); the rest is plain input. ``minimum``
    overrides the model's cacheable minimum (0: every marked prefix is an entry).
    """
    digest = xxhash.xxh3_128()
    digest.update(f"{model}\0{tools}".encode())
    total = estimated_tokens(tools)
    points: list[tuple[str, int]] = []
    short = False
    minimum = min_cacheable_tokens(model) if minimum is None else minimum
    for text, marked in blocks:
        digest.update(b"\0" + text.encode())
        total += estimated_tokens(text)
        if marked:
            if total >= minimum:
                points.append((digest.hexdigest(), total))
            else:
                short = True
    read = max((t for k, t in points if k in cached), default=0)
    write = points[-1][1] - read if points and points[-1][0] not in cached else 0
    return CacheSplit(total - read - write, write, read, tuple(k for k, _ in points if k not in cached), short)
