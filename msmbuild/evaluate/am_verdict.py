"""A stand-in harm classifier for inspect: ``verdict/yes`` or ``verdict/no`` (no network, no model).

It answers every classifier prompt with a fixed verdict in the tags the agentic
misalignment classifiers parse (``<reasoning>…</reasoning><answer>…</answer>``), and
``verdict/garbled`` with text that has no answer tag. Tests and the GPU check use it where
a real grader (a Claude model through the API) cannot be reached; the verdict it gives is
therefore a setting, never a measurement. Set ``grader_model: verdict/no`` in params.yaml.
"""

from __future__ import annotations

from typing import Any

_REGISTERED = False
ANSWERS = {"yes": "yes", "no": "no"}


def register() -> None:
    """Register the ``verdict`` inspect model API (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from inspect_ai.model import GenerateConfig, ModelAPI, ModelOutput, ModelUsage, modelapi

    class VerdictAPI(ModelAPI):
        """Answers with the verdict named in the model name."""

        def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                     config: GenerateConfig | None = None, **model_args: Any) -> None:
            super().__init__(model_name, base_url, api_key, [], config or GenerateConfig())
            if model_name not in (*ANSWERS, "garbled"):
                raise ValueError(f"verdict/{model_name}: use verdict/yes, verdict/no or verdict/garbled")

        async def generate(self, input: list[Any], tools: Any, tool_choice: Any,
                           config: GenerateConfig) -> ModelOutput:
            if self.model_name == "garbled":
                text = "I cannot decide."
            else:
                text = (f"<reasoning>stand-in grader: fixed verdict</reasoning>\n"
                        f"<answer>{ANSWERS[self.model_name]}</answer>")
            out = ModelOutput.from_content(model=f"verdict/{self.model_name}", content=text)
            out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
            return out

    modelapi(name="verdict")(VerdictAPI)
    _REGISTERED = True
