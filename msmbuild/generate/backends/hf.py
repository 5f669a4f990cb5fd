"""The ``hf`` generation backend: a local transformers model, batched on this machine.

It runs the same generation path as the qa eval suite
(``msmbuild.models.generate_texts``). Spec context and system text become
the system turn of the model's chat template; a request with a JSON schema asks for JSON
and is parsed, and an answer that is not JSON is a per-item error (local models cannot be
constrained by the API the way hosted ones are).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from msmbuild.config import HFGenConfig
from msmbuild.generate.backends.base import (
    Backend,
    GenRequest,
    GenResult,
    ItemError,
    OnResult,
    Usage,
)
from msmbuild.hashing import action_key

_JSON_BLOCK = re.compile(r"\{.*\}|\[.*\]", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The first JSON object or array in text; ValueError when there is none."""
    match = _JSON_BLOCK.search(text)
    if match is None:
        raise ValueError("no JSON object in the answer")
    return json.loads(match.group(0))


class HFBackend(Backend):
    """Generation by a local checkpoint or hub model with ``from_pretrained``."""

    name = "hf"

    def __init__(self, config: HFGenConfig):
        self.config = config
        self._lm = None

    def identity(self) -> dict[str, Any]:
        """Model id plus content digest of a local checkpoint, and the token cap."""
        from msmbuild.models import checkpoint_identity

        return {"backend": self.name, "model": self.config.model,
                "checkpoint": checkpoint_identity(self.config.model),
                "max_new_tokens": self.config.max_new_tokens}

    def _model(self):
        if self._lm is None:
            from msmbuild.models import load_for_inference

            self._lm = load_for_inference(self.config.model)
        return self._lm

    def _prompt(self, request: GenRequest) -> str:
        from msmbuild.models import render_prompt

        system = "\n\n".join(part for part in (request.system_text, request.context) if part)
        user = request.user_text
        if request.schema is not None:
            user += "\n\nAnswer with JSON only, matching this schema:\n" + json.dumps(request.schema)
        return render_prompt(self._model(), user, system=system)

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
        """Answer requests in batches of equal (max_tokens, temperature); errors per item."""
        from msmbuild.models import generate_texts, uses_template

        lm = self._model()
        groups: dict[tuple[int, float], list[int]] = {}
        for i, req in enumerate(requests):
            cap = min(req.max_tokens, self.config.max_new_tokens)
            groups.setdefault((cap, req.temperature), []).append(i)
        errors: list[ItemError] = []
        for (cap, temperature), members in groups.items():
            for start in range(0, len(members), self.config.batch_size):
                chunk = members[start:start + self.config.batch_size]
                # Seeded from the requests themselves, so a rerun samples the same text.
                seed = int(action_key({"r": [requests[i].key_inputs() for i in chunk]})[:8], 16)
                answers = generate_texts(lm, [self._prompt(requests[i]) for i in chunk], cap,
                                         temperature=temperature, batch_size=len(chunk), seed=seed,
                                         templated=uses_template(lm, True))
                for i, (text, n_in, n_out) in zip(chunk, answers, strict=True):
                    data = None
                    if requests[i].schema is not None:
                        try:
                            data = parse_json_answer(text)
                        except ValueError as exc:
                            errors.append(ItemError(i, f"hf model {self.config.model}: answer to request {i} "
                                                       f"is not JSON ({exc})"))
                            continue
                    on_result(i, GenResult(text=text, data=data, usage=Usage(n_in, n_out),
                                           model=self.config.model, backend=self.name,
                                           produced_by_model=True))
        return errors

    def close(self) -> None:
        """Drop the model."""
        self._lm = None
