"""Which Anthropic models are current: the installed SDK's model list and retirement table.

The SDK names the models it knows (``anthropic.types.ModelParam``) and the retirement date
of deprecated ones (``anthropic._data.DEPRECATED_MODELS``). Defaults in params.yaml name
only current models (a test checks), ``msmbuild plan`` warns about deprecated ones, and
the anthropic backend's preflight asks the Models API itself before spending.
"""

from __future__ import annotations

import datetime
import logging
import re
import typing

from msmbuild.errors import BackendError

__all__ = ["DEFAULT_MODEL", "check_not_retired", "current_models", "retirement_date", "sdk_models"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-opus-4-6"  # the paper's scripts; its production runs used claude-opus-4-7


def sdk_models() -> list[str]:
    """Every model id the installed SDK names."""
    from anthropic.types import ModelParam

    literal = next(a for a in typing.get_args(ModelParam) if typing.get_origin(a) is typing.Literal)
    return list(typing.get_args(literal))


def retirement_date(model: str) -> datetime.date | None:
    """The day the SDK says model retires, or None when it is not deprecated."""
    try:
        from anthropic._data import DEPRECATED_MODELS  # the SDK's own retirement table
    except ImportError:
        return None
    when = DEPRECATED_MODELS.get(model)
    if when is None:
        return None
    return datetime.datetime.strptime(re.sub(r"(\d)(st|nd|rd|th)", r"\1", when), "%B %d, %Y").date()


def _today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def current_models(today: datetime.date | None = None) -> list[str]:
    """The SDK's model ids that are not retired by today."""
    day = today or _today()
    return [m for m in sdk_models() if (r := retirement_date(m)) is None or r > day]


def check_not_retired(model: str, key: str, today: datetime.date | None = None) -> str | None:
    """BackendError for a model retired by today; a warning text when it retires later."""
    day = retirement_date(model)
    if day is None:
        return None
    if day <= (today or _today()):
        raise BackendError(f"params.yaml: {key}: {model!r} was retired on {day.isoformat()}; "
                           f"choose a current model, e.g. {DEFAULT_MODEL}")
    message = f"params.yaml: {key}: {model!r} is deprecated and retires on {day.isoformat()}"
    log.warning(message)
    return message
