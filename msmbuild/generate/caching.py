"""Prompt caching facts: the minimum cacheable prefix per model, and how prefixes are measured.

The Messages API caches a prefix (tools, then system blocks up to a ``cache_control``
mark) only when it reaches a model-dependent minimum; below it the request succeeds,
nothing is cached and both cache counters stay 0. No maintained library carries these
numbers, so they are written here from Anthropic's prompt-caching documentation
(platform.claude.com/docs/en/build-with-claude/prompt-caching, read 2026-11-30). The
backend marks a prefix only when it is long enough; the loopback server enforces the same
table, so a test sees it when a marked prefix is too short.
"""

from __future__ import annotations

__all__ = ["CHARS_PER_TOKEN", "DEFAULT_MIN_CACHEABLE_TOKENS", "estimated_tokens", "min_cacheable_tokens"]

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
