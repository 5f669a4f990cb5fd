"""The one interface every generation backend implements.

A stage builds ``GenRequest``s; ``msmbuild.generate.calls.run_requests`` keys each one,
answers hits from the store and hands only the misses to ``Backend.generate``, storing
each result the moment it arrives (so an interrupted run never pays for it again).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class GenRequest:
    """One model call. Everything here is part of the call's action key.

    ``context`` is the shared spec text (sent as a cached system block where the backend
    supports prompt caching); ``schema`` asks for structured JSON matching a JSON schema;
    ``sample_index`` distinguishes repeated samples of the same prompt. ``context_key``,
    when set, stands in for ``context`` in the key: the full_incremental policy sends the
    whole spec but keys the call by what it is about (the prompt holds its own section),
    and the digest of the context actually sent is kept with the result as provenance.
    ``items_asked`` is the list length the prompt asks for (0: not a list), for estimates.
    ``shared_schemas`` (stage -> schema) are the structured stages that share the
    context: a backend with prompt caching sends them all as tools so that every stage
    reads one cached prefix.

    A request laid out for prompt caching (prompt version 3 of the corpus stages) has three
    more parts, in the order a backend sends them after the context: ``instructions`` (the
    stage's fixed instructions, the same for every request of the stage in a corpus),
    ``shared`` (what every request about one subdomain shares: its excerpt and assertions)
    and ``prompt`` (what varies). ``legacy``, when set, is the same call as an older prompt
    version built it: its stored answer stands in for this one until a refresh (never keyed).
    """

    stage: str
    prompt: str
    context: str = ""
    system: str = ""
    schema: dict[str, Any] | None = None
    max_tokens: int = 4096
    temperature: float = 0.8
    sample_index: int = 0
    prompt_version: str = ""
    shared_schemas: dict[str, dict[str, Any]] | None = None
    context_key: str = ""
    items_asked: int = 0
    instructions: str = ""
    shared: str = ""
    legacy: GenRequest | None = field(default=None, compare=False, repr=False)

    def key_inputs(self) -> dict[str, Any]:
        """The request's part of the action key (the backend adds its identity).

        Every field by name, ``context`` replaced by ``context_key`` when one is set (a
        shallow copy: keys only read it, and asdict's deep copy is a per-call cost on the
        generation hot path).
        """
        inputs = {f.name: getattr(self, f.name) for f in _REQUEST_FIELDS}
        if self.shared_schemas is None:  # keys made before the field existed stay valid
            del inputs["shared_schemas"]
        for name in ("instructions", "shared"):  # likewise for requests without these parts
            if not inputs[name]:
                del inputs[name]
        if self.context_key:
            inputs["context"] = self.context_key
        return inputs

    @property
    def system_text(self) -> str:
        """The system text with the stage's fixed instructions (for backends without blocks)."""
        return "\n\n".join(p for p in (self.system, self.instructions) if p)

    @property
    def full_prompt(self) -> str:
        """Everything the request asks after the context: instructions, shared part, what varies."""
        return "\n\n".join(p for p in (self.instructions, self.shared, self.prompt) if p)

    @property
    def user_text(self) -> str:
        """The user turn as one text: the subdomain's shared part, then what varies."""
        return "\n\n".join(p for p in (self.shared, self.prompt) if p)


# items_asked (how many list items the prompt asks for) is read by estimates, never keyed:
# the prompt that asks for them is; legacy is a lookup, not part of what is asked.
_REQUEST_FIELDS = [f for f in fields(GenRequest) if f.name not in ("context_key", "items_asked", "legacy")]


@dataclass
class Usage:
    """Token counts of one call (zero for backends that are not models)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass
class GenResult:
    """The answer to one request: text, parsed JSON when a schema was given, usage, cost."""

    text: str
    data: Any = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    model: str = ""
    backend: str = ""
    produced_by_model: bool = True
    batch: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Encoding stored in the action cache (shallow: asdict's deep copy is a hot-path cost)."""
        return {"text": self.text, "data": self.data, "usage": vars(self.usage).copy(),
                "cost_usd": self.cost_usd, "model": self.model, "backend": self.backend,
                "produced_by_model": self.produced_by_model, "batch": self.batch,
                "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GenResult:
        """Decode what to_json produced."""
        raw = dict(raw)
        raw["usage"] = Usage(**raw.get("usage", {}))
        return cls(**raw)


class ItemError(Exception):
    """A request that failed for good (after retries); the run keeps every other result."""

    def __init__(self, index: int, message: str, stop_reason: str = ""):
        super().__init__(message)
        self.index = index
        self.stop_reason = stop_reason  # the model's, when it answered but the answer is not kept


OnResult = Callable[[int, GenResult], None]


class Backend(ABC):
    """A generation backend: offline, anthropic or hf."""

    name: str = ""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What about this backend determines its answers (model id, revision); part of keys.

        Never includes credentials, URLs or concurrency settings.
        """

    @abstractmethod
    def generate(self, requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
        """Answer every request, calling on_result(i, result) as each finishes.

        on_result must return quickly: a backend may call it on its event loop (the
        caller hands slow work such as store writes to a ResultWriter). An on_result with
        a ``flush()`` method (run_requests' has one) can be asked to make everything
        handed over so far durable; a backend does so before it forgets anything it
        would need to recover those results (the anthropic backend's batch ledger).

        Returns the per-item errors that retries could not heal; must not raise for a
        single bad item. Raises BackendError for failures that stop everything (bad key,
        exhausted spend limit).
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for most backends
        """Release clients and threads."""
