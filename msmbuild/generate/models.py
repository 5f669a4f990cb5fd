"""Which Anthropic models are current, from public sources only.

The installed SDK names the models it knows (``anthropic.types.ModelParam``, a public type);
genai-prices carries a maintained ``deprecated`` flag per model. Neither says when a model
retires, so the authority is the Models API itself: the anthropic backend's preflight asks
it (one call) before a build's first paid request and stops on a retired or unknown model.
``msmbuild plan`` runs offline, so it only warns: from genai-prices' flag where it has one,
otherwise that the model will be checked at build start.
"""

from __future__ import annotations

import logging
import typing

__all__ = ["DEFAULT_MODEL", "RETIRED_MODELS_SEEN", "build_start_note", "deprecation_warning", "prices_know",
           "sdk_models"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-opus-4-6"  # the paper's scripts; its production runs used claude-opus-4-7

# Models the Models API no longer serves, as observed (the SDK still lists some of them).
# Used only as the loopback test server's default "retired" set and by the defaults test.
RETIRED_MODELS_SEEN = ("claude-opus-4-1", "claude-sonnet-4-5")


def sdk_models() -> list[str]:
    """Every model id the installed SDK names (its public ``ModelParam`` literal)."""
    from anthropic.types import ModelParam

    literal = next(a for a in typing.get_args(ModelParam) if typing.get_origin(a) is typing.Literal)
    return list(typing.get_args(literal))


def _prices_entry(model: str) -> typing.Any | None:
    """genai-prices' entry for an Anthropic model id, or None when it has none."""
    from genai_prices import data_snapshot

    try:
        _provider, info = data_snapshot.get_snapshot().find_provider_model(model, None, "anthropic", None)
    except LookupError:
        return None
    return info


def prices_know(model: str) -> bool:
    """Whether genai-prices has an entry (and so a price) for this model id."""
    return _prices_entry(model) is not None


def deprecation_warning(model: str, key: str) -> str | None:
    """A warning naming ``key`` when genai-prices flags the model deprecated, else None."""
    info = _prices_entry(model)
    if info is None or not info.deprecated:
        return None
    message = (f"params.yaml: {key}: {model!r} is deprecated (genai-prices); the Models API check "
               "at build start stops the build if it is retired")
    log.warning(message)
    return message


def build_start_note(model: str, key: str) -> str:
    """The plan's line for a model it cannot vouch for offline."""
    return f"{key}: {model!r} is checked against the Models API at build start (one call, before any paid request)"
