"""Structured JSON answers through forced tool use, validated, with re-asks.

A request with a ``schema`` is sent with one tool whose ``input_schema`` is that schema
and ``tool_choice`` forcing it, so the answer arrives as the tool call's ``input``. Tool
inputs must be objects, so a non-object schema is wrapped as ``{"value": schema}`` and
unwrapped on the way back. The answer is checked by a small validator (types, required
keys, properties, items, enum, minItems/maxItems); a malformed answer is returned to the
model as an error ``tool_result`` asking it to call the tool again.

A request that shares a cached prefix with other stages (``GenRequest.shared_schemas``)
is sent every stage's tool (``emit_<stage>``), forcing its own, or none for a text stage:
the tools come first in the API's cache prefix, so one tool list for all stages lets
every call of a corpus read one cached prefix.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOOL_NAME", "extract", "reask_messages", "tool_name", "tool_params", "tool_set_params", "validate"]

TOOL_NAME = "emit_json"
_WRAP_KEY = "value"

_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
                                       "number": (int, float), "boolean": (bool,), "null": (type(None),)}


def _wrapped(schema: dict[str, Any]) -> bool:
    return schema.get("type", "object") != "object"


def _tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    input_schema = ({"type": "object", "properties": {_WRAP_KEY: schema}, "required": [_WRAP_KEY]}
                    if _wrapped(schema) else schema)
    return {"name": name, "description": "Give the answer as JSON matching the schema.",
            "input_schema": input_schema}


def tool_name(stage: str | None = None) -> str:
    """The tool of a stage in a shared tool list (``emit_<stage>``), or the single tool's name."""
    return f"emit_{stage}" if stage else TOOL_NAME


def tool_params(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``tools`` and ``tool_choice`` request params that force an answer matching schema."""
    return {"tools": [_tool(TOOL_NAME, schema)], "tool_choice": {"type": "tool", "name": TOOL_NAME}}


def tool_set_params(schemas: dict[str, dict[str, Any]], stage: str | None) -> dict[str, Any]:
    """Every stage's tool, forcing stage's own (None: no tool, a text answer)."""
    tools = [_tool(tool_name(name), schemas[name]) for name in sorted(schemas)]
    choice = {"type": "tool", "name": tool_name(stage)} if stage is not None else {"type": "none"}
    return {"tools": tools, "tool_choice": choice}


def _type_ok(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> str | None:
    """The first way value breaks schema, as a sentence naming the JSON path, or None."""
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            return f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {schema['enum']!r}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{path}: missing required key {key!r}"
        for key, sub in schema.get("properties", {}).items():
            if key in value and (problem := validate(value[key], sub, f"{path}.{key}")):
                return problem
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{path}: expected at least {schema['minItems']} items, got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path}: expected at most {schema['maxItems']} items, got {len(value)}"
        if "items" in schema:
            for i, item in enumerate(value):
                if problem := validate(item, schema["items"], f"{path}[{i}]"):
                    return problem
    return None


def extract(content: list[Any], schema: dict[str, Any], name: str = TOOL_NAME) -> tuple[Any, str | None]:
    """(data, problem) from a Message's content blocks: the forced tool call's input, checked."""
    call = next((b for b in content if getattr(b, "type", None) == "tool_use"
                 and getattr(b, "name", None) == name), None)
    if call is None:
        return None, f"the answer did not call the {name} tool"
    data = call.input
    if _wrapped(schema):
        if not isinstance(data, dict) or _WRAP_KEY not in data:
            return None, f"$: missing required key {_WRAP_KEY!r}"
        data = data[_WRAP_KEY]
    return data, validate(data, schema)


def reask_messages(content: list[Any], problem: str, name: str = TOOL_NAME) -> list[dict[str, Any]]:
    """The assistant turn that went wrong plus a user turn saying what to fix."""
    assistant = [b.model_dump(exclude_none=True) if hasattr(b, "model_dump") else b for b in content]
    call = next((b for b in content if getattr(b, "type", None) == "tool_use"), None)
    note = f"That input is invalid: {problem}. Call {name} again with input that matches the schema."
    if call is not None:
        reply: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": call.id, "is_error": True, "content": note}]
    else:
        reply = [{"type": "text", "text": note}]
    return [{"role": "assistant", "content": assistant}, {"role": "user", "content": reply}]
