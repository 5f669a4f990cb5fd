"""A loopback server that speaks the Anthropic Messages, Message Batches and Models API.

Tests and benchmarks point the real ``anthropic`` SDK at it (``base_url``). It answers
deterministically from the request, counts requests per endpoint and per prompt and the
in-flight maximum, and injects faults on demand (``FAULT_KINDS``: HTTP errors with
retry-after, a dropped connection, a malformed structured answer, an answer whose JSON body
is cut off (status 200, answered and counted, the body ends mid-JSON), an answer cut off at
max_tokens, errored, expired and never-ending batch items); ``hold_after(n)`` holds every Messages answer after the n-th
until ``release()``.

It enforces ``rate_limits`` (per minute, any subset of ``RATE_KINDS``) with the API's token
buckets, answering 429 with ``retry-after`` and sending ``anthropic-ratelimit-*`` headers
(docs/generate.md, "Rate limits"); without them nothing is enforced and no such header
is sent. Prompt caching is accounted as the API does, with the model's minimum cacheable
length (``msmbuild.generate.caching``); a marked prefix below it is plain input, counted in
``stats()["cache_marks_below_minimum"]``. The Models API serves the SDK's current models;
any other id is a 404, as a retired model is on the real API.

In-process use::

    with FakeAnthropic(latency_s=0.2) as server:
        server.inject("429", times=2, retry_after=0.05)
        ...  # AsyncAnthropic(base_url=server.url, api_key="x")
        server.stats()["endpoints"]["messages"]

As a separate process (benchmarks, so the server does not steal the client's CPU):
``python -m msmbuild.testing.fake_anthropic --latency 0.2`` prints its URL on the first
line of stdout; ``stats_remote(url)`` / ``inject_remote(url, ...)`` drive it over HTTP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import xxhash

from msmbuild.generate.caching import CacheSplit, input_blocks, split_input
from msmbuild.generate.models import RETIRED_MODELS_SEEN, sdk_models

__all__ = ["FAULT_KINDS", "RATE_KINDS", "FakeAnthropic", "Fault", "configure_remote", "inject_remote",
           "spawn_server", "stats_remote"]

# kind -> (HTTP status, error type) for faults answered with an error body
_HTTP_FAULTS: dict[str, tuple[int, str]] = {
    "429": (429, "rate_limit_error"),
    "529": (529, "overloaded_error"),
    "500": (500, "api_error"),
    "400": (400, "invalid_request_error"),
    "401": (401, "authentication_error"),
    "402": (402, "billing_error"),
}
FAULT_KINDS = (*_HTTP_FAULTS, "drop", "malformed", "malformed_json", "batch_errored", "batch_invalid",
               "batch_expired", "batch_hang", "max_tokens")

_WORDS = (
    "the assistant weighs each request against the spec and explains its choice plainly "
    "while users developers and operators each hold different levels of trust in what "
    "it should do when a case is unclear honest careful helpful bounded by clear limits"
).split()


@dataclass
class Fault:
    """A fault to inject: ``times`` requests (-1: every one) whose prompt contains ``match``."""

    kind: str
    times: int = 1
    match: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters per token."""
    return max(1, len(text) // 4)


def _block_text(content: Any) -> str:
    """The text of a message content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict):
            if "text" in block:
                parts.append(str(block["text"]))
            elif "content" in block:
                parts.append(_block_text(block["content"]))
            elif "input" in block:
                parts.append(json.dumps(block["input"], sort_keys=True))
    return "\n".join(parts)


def prompt_of(params: dict[str, Any]) -> str:
    """The first user message's text: the unit the server counts requests by."""
    for message in params.get("messages") or []:
        if message.get("role") == "user":
            return _block_text(message.get("content"))
    return ""


def _split(params: dict[str, Any], cache: set[str]) -> CacheSplit:
    """The API's split of a request's input (tools, system blocks, then the user turn's blocks).

    Every block with ``cache_control`` ends a prefix, cached only when it reaches the
    model's minimum; the longest cached prefix is read, the rest up to the last marked
    prefix written (``msmbuild.generate.caching.split_input``). ``usage`` (the answer's
    cache accounting) and ``rate_cost`` (what the rate limits charge) both split here.
    """
    tools = params.get("tools")
    tools_text = json.dumps(tools, sort_keys=True) if tools else ""
    blocks = [(str(b.get("text", "")), bool(b.get("cache_control"))) for b in input_blocks(params)]
    return split_input(str(params.get("model")), tools_text, blocks, cache)


def _sample_from_schema(schema: dict[str, Any], rng: random.Random, depth: int = 0,
                        list_items: int | None = None) -> Any:
    """A value that satisfies a (simple) JSON schema, drawn from rng (list_items: array length)."""
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _sample_from_schema(sub, rng, depth + 1, list_items) for name, sub in props.items()}
    if kind == "array":
        n = max(schema.get("minItems", 3), 1) if depth < 4 else 0
        if list_items is not None and depth < 4:
            n = min(max(list_items, schema.get("minItems", 0)), schema.get("maxItems", list_items))
        return [_sample_from_schema(schema.get("items", {"type": "string"}), rng, depth + 1, list_items)
                for _ in range(n)]
    if kind == "string":
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8)))
    if kind == "integer":
        return rng.randint(1, 9)
    if kind == "number":
        return round(rng.uniform(0, 1), 3)
    if kind == "boolean":
        return rng.random() < 0.8
    return None


RATE_KINDS = ("requests", "input-tokens", "output-tokens")


class _TokenBucket:
    """Capacity = the per-minute limit, refilled continuously at limit/60 per second; starts full."""

    def __init__(self, limit: int):
        self.limit = limit
        self.level = float(limit)
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self.stamp) * self.limit / 60.0)
        self.stamp = now

    def seconds_until(self, amount: float) -> float:
        """Seconds until the bucket holds amount (capped at its capacity)."""
        return max(0.0, min(amount, self.limit) - self.level) * 60.0 / self.limit


class _RateLimits:
    """The per-minute token buckets of one organization (callers hold the state's lock)."""

    def __init__(self, limits: dict[str, int]):
        unknown = set(limits) - set(RATE_KINDS)
        if unknown:
            raise ValueError(f"unknown rate-limit kind(s) {sorted(unknown)}; known: {', '.join(RATE_KINDS)}")
        self.buckets = {kind: _TokenBucket(int(n)) for kind, n in limits.items() if n}
        self.charged: Counter[str] = Counter()  # what admitted requests finally cost, per kind

    def admit(self, cost: dict[str, float]) -> float:
        """Charge cost and return 0, or charge nothing and return the seconds to wait."""
        now = time.monotonic()
        wait = 0.0
        for kind, bucket in self.buckets.items():
            bucket.refill(now)
            wait = max(wait, bucket.seconds_until(cost.get(kind, 0)))
        if wait > 0:
            return wait
        for kind, bucket in self.buckets.items():
            # A request larger than the whole bucket is admitted on a full bucket and empties it.
            bucket.level -= min(cost.get(kind, 0), bucket.limit)
            self.charged[kind] += cost.get(kind, 0)
        return 0.0

    def settle(self, kind: str, charged: float, actual: float) -> None:
        """Replace an up-front estimate by what the request actually used."""
        bucket = self.buckets.get(kind)
        if bucket is not None:
            bucket.level = min(float(bucket.limit), bucket.level + charged - actual)
            self.charged[kind] += actual - charged

    def headers(self) -> dict[str, str]:
        """anthropic-ratelimit-* headers describing every bucket now."""
        now = time.monotonic()
        wall = time.time()
        out: dict[str, str] = {}
        for kind, bucket in self.buckets.items():
            bucket.refill(now)
            out[f"anthropic-ratelimit-{kind}-limit"] = str(bucket.limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(max(0, math.floor(bucket.level)))
            out[f"anthropic-ratelimit-{kind}-reset"] = _now_iso(wall + bucket.seconds_until(bucket.limit))
        tokens = [k for k in ("input-tokens", "output-tokens") if k in self.buckets]
        if tokens:
            tightest = min(tokens, key=lambda k: self.buckets[k].level / self.buckets[k].limit)
            for part in ("limit", "remaining", "reset"):
                out[f"anthropic-ratelimit-tokens-{part}"] = out[f"anthropic-ratelimit-{tightest}-{part}"]
        return out


class _State:
    """Everything the handlers share; one lock guards it."""

    def __init__(self, latency_s: float, batch_latency_s: float, answer_chars: int,
                 api_key: str | None, rate_limits: dict[str, int] | None = None,
                 models: list[str] | None = None):
        self.lock = threading.Lock()
        # the models this server serves: the SDK's list less the ones the real API retired
        self.models = list(models) if models is not None else [m for m in sdk_models() if m not in RETIRED_MODELS_SEEN]
        self.list_items: int | None = None  # array length of structured answers (None: the schema's minItems)
        self.answered_cond = threading.Condition(self.lock)  # wakes requests held by hold_after
        self.answer_limit: int | None = None  # successful Messages answers allowed; None: no limit
        self.closing = False
        self.latency_s = latency_s
        self.batch_latency_s = batch_latency_s
        self.answer_chars = answer_chars
        self.api_key = api_key
        self.limits = _RateLimits(rate_limits or {})
        self.faults: list[Fault] = []
        self.cache: set[str] = set()
        self.batches: dict[str, dict[str, Any]] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.endpoints: Counter[str] = Counter()
        self.prompts: Counter[str] = Counter()
        self.faults_fired: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.held = 0  # Messages requests waiting for release() (hold_after)
        self.connections = 0  # TCP connections accepted (a client that reuses them opens few)
        self.recent: deque[dict[str, Any]] = deque(maxlen=1000)  # last Messages request bodies
        self.batch_items = 0
        self.rate_limited = 0  # Messages requests answered 429 by the rate limits (not injected)
        self.cache_marks_below_minimum = 0
        self.usage_totals: Counter[str] = Counter()

    def take_fault(self, prompt: str, kinds: tuple[str, ...]) -> Fault | None:
        """Consume the first armed fault of one of kinds that matches prompt."""
        with self.lock:
            for fault in self.faults:
                if fault.kind in kinds and fault.times != 0 and (fault.match is None or fault.match in prompt):
                    if fault.times > 0:
                        fault.times -= 1
                    self.faults_fired[fault.kind] += 1
                    return fault
        return None

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "endpoints": dict(self.endpoints),
                "prompts": dict(self.prompts),
                "faults_fired": dict(self.faults_fired),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "held": self.held,
                "connections": self.connections,
                "batch_items": self.batch_items,
                "rate_limited": self.rate_limited,
                "rate_charged": dict(self.limits.charged),
                "rate_limits": {k: b.limit for k, b in self.limits.buckets.items()},
                "cache_marks_below_minimum": self.cache_marks_below_minimum,
                "usage": dict(self.usage_totals),
                "batches": {bid: b["processing_status"] for bid, b in self.batches.items()},
            }

    # -- answers ---------------------------------------------------------------
    def usage(self, params: dict[str, Any], output_text: str) -> dict[str, int]:
        """Token usage; a cacheable prefix is written on its first request and read after."""
        with self.lock:
            p = _split(params, self.cache)
            self.cache.update(p.new_entries)
            created, read = p.write, p.read
            if p.marked_short:
                self.cache_marks_below_minimum += 1
        usage = {"input_tokens": p.plain, "output_tokens": _tokens(output_text),
                 "cache_creation_input_tokens": created, "cache_read_input_tokens": read}
        with self.lock:
            self.usage_totals.update(usage)
        return usage

    def rate_cost(self, params: dict[str, Any]) -> dict[str, float]:
        """What a request is charged on arrival: input tokens except cache reads, max_tokens out."""
        with self.lock:
            p = _split(params, self.cache)
        counted = p.plain + p.write
        return {"requests": 1, "input-tokens": counted, "output-tokens": int(params.get("max_tokens") or 0)}

    def answer(self, params: dict[str, Any], malformed: bool = False, cut_off: bool = False) -> dict[str, Any]:
        """A Message derived from the request alone (same request, same answer).

        cut_off: the answer stops at max_tokens, mid-sentence (its first half, tags left
        open), with ``stop_reason: max_tokens``, as the API sends an answer that ran out.
        """
        body = json.dumps(params, sort_keys=True).encode()
        digest = xxhash.xxh3_128_hexdigest(body)
        rng = random.Random(digest)
        prompt = prompt_of(params)
        model = params.get("model", "claude-fake")
        tool_choice = params.get("tool_choice") or {}
        tools = params.get("tools") or []
        if tools and tool_choice.get("type") in ("tool", "any"):
            tool = next((t for t in tools if t.get("name") == tool_choice.get("name")), tools[0])
            data = _sample_from_schema(tool.get("input_schema", {}), rng, list_items=self.list_items)
            if malformed:
                data = {"unexpected": "not what the schema asks for"}
            content = [{"type": "tool_use", "id": f"toolu_{digest[:24]}", "name": tool["name"], "input": data}]
            out_text = json.dumps(data)
            stop = "tool_use"
        else:
            head = f"Answer to: {prompt[:120]}\n"
            words: list[str] = []
            size = len(head)
            while size < self.answer_chars:
                w = rng.choice(_WORDS)
                words.append(w)
                size += len(w) + 1
            out_text = head + " ".join(words)
            asks = prompt + json.dumps(params.get("system") or "")
            if "<content>" in asks:  # the prompt (or its instructions) asks for a plan, then the text in <content>
                out_text = f"<scratchpad>plan for: {prompt[:60]}</scratchpad>\n<content>\n{out_text}\n</content>"
            content = [{"type": "text", "text": out_text}]
            stop = "end_turn"
        if cut_off:
            out_text = out_text[:len(out_text) // 2]
            content = ([{"type": "text", "text": out_text}] if content[0]["type"] == "text"
                       else [{**content[0], "input": {}}])
            stop = "max_tokens"
        return {
            "id": f"msg_{digest[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": self.usage(params, out_text),
        }

    # -- batches -----------------------------------------------------------------
    def create_batch(self, requests: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            bid = f"msgbatch_{len(self.batches) + 1:06d}_{xxhash.xxh64_hexdigest(str(now).encode())}"
            self.batch_items += len(requests)
            for req in requests:
                self.prompts[prompt_of(req.get("params", {}))] += 1
        hang = any(self.take_fault(prompt_of(r.get("params", {})), ("batch_hang",)) for r in requests)
        batch = {
            "id": bid, "type": "message_batch", "processing_status": "in_progress",
            "created_at": _now_iso(now), "expires_at": _now_iso(now + 86400),
            "ended_at": None, "archived_at": None, "cancel_initiated_at": None, "results_url": None,
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                               "canceled": 0, "expired": 0},
            "_requests": requests, "_ends": float("inf") if hang else now + self.batch_latency_s,
            "_results": None, "_base": base_url,
        }
        with self.lock:
            self.batches[bid] = batch
        return batch

    def settle(self, batch: dict[str, Any]) -> None:
        """Finish a batch whose time has come: compute every item's result."""
        if batch["processing_status"] == "ended" or (
                time.time() < batch["_ends"] and batch["processing_status"] != "canceling"):
            return
        results = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        canceling = batch["processing_status"] == "canceling"
        for req in batch["_requests"]:
            params = req.get("params", {})
            prompt = prompt_of(params)
            if canceling:
                result: dict[str, Any] = {"type": "canceled"}
            elif self.take_fault(prompt, ("batch_expired",)):
                result = {"type": "expired"}
            elif fault := self.take_fault(prompt, ("batch_errored", "batch_invalid")):
                etype = "invalid_request_error" if fault.kind == "batch_invalid" else "api_error"
                result = {"type": "errored", "error": {
                    "type": "error", "request_id": None,
                    "error": {"type": etype, "message": f"injected {fault.kind}"}}}
            else:
                malformed = bool(params.get("tools")) and self.take_fault(prompt, ("malformed",)) is not None
                cut_off = self.take_fault(prompt, ("max_tokens",)) is not None
                result = {"type": "succeeded", "message": self.answer(params, malformed, cut_off)}
            counts[result["type"]] += 1
            results.append({"custom_id": req["custom_id"], "result": result})
        results.reverse()  # real results are not in request order either
        with self.lock:
            batch["_results"] = results
            batch["request_counts"] = counts
            batch["processing_status"] = "ended"
            batch["ended_at"] = _now_iso(time.time())
            batch["results_url"] = f"{batch['_base']}/v1/messages/batches/{batch['id']}/results"


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Without this every response waits ~40 ms for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.st.lock:
            self.st.connections += 1

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def st(self) -> _State:
        return self.server.state

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{xxhash.xxh64_hexdigest(data)}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, etype: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"type": "error", "error": {"type": etype, "message": message},
                            "request_id": None}, headers)

    def _ratelimit_headers(self) -> dict[str, str]:
        with self.st.lock:
            return self.st.limits.headers()

    def _rate_limited(self, params: dict[str, Any]) -> dict[str, float] | None:
        """Charge the rate limits on arrival and return the charge, or answer 429 and return None."""
        st = self.st
        if not st.limits.buckets:
            return {}
        cost = st.rate_cost(params)
        with st.lock:
            wait = st.limits.admit(cost)
            if wait <= 0:
                return cost
            st.rate_limited += 1
            headers = st.limits.headers()
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        self._error(429, "rate_limit_error",
                    "This request would exceed your organization's rate limit. Please try again later.", headers)
        return None

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _authorized(self) -> bool:
        key = self.headers.get("x-api-key")
        auth = self.headers.get("authorization") or ""
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:]
        if not key or (self.st.api_key is not None and key != self.st.api_key):
            self._error(401, "authentication_error", "invalid API key (x-api-key or Authorization: Bearer)")
            return False
        return True

    def _count(self, endpoint: str) -> None:
        with self.st.lock:
            self.st.endpoints[endpoint] += 1

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._guarded(self._post)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._guarded(self._get)

    def _guarded(self, handler: Any) -> None:
        """A bug in the server answers 500 (as the real API would) instead of dropping."""
        try:
            handler()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - reported to the client
            self._error(500, "api_error", f"fake server error: {type(exc).__name__}: {exc}")

    def _post(self) -> None:
        path = self.path.split("?")[0]
        body = self._body()
        if path.startswith("/_fake/"):
            return self._control(path, body)
        if not self._authorized():
            return None
        if path == "/v1/messages":
            return self._messages(body)
        if path == "/v1/messages/batches":
            self._count("batches_create")
            requests = body.get("requests") or []
            if not requests:
                return self._error(400, "invalid_request_error", "requests: must not be empty")
            host = self.headers.get("host") or f"127.0.0.1:{self.server.server_port}"
            return self._send(200, _public(self.st.create_batch(requests, f"http://{host}")))
        if path.startswith("/v1/messages/batches/") and path.endswith("/cancel"):
            self._count("batches_cancel")
            batch = self.st.batches.get(path.split("/")[4])
            if batch is None:
                return self._error(404, "not_found_error", "no such batch")
            if batch["processing_status"] == "in_progress":
                batch["processing_status"] = "canceling"
                batch["cancel_initiated_at"] = _now_iso(time.time())
            return self._send(200, _public(batch))
        return self._error(404, "not_found_error", f"no route POST {path}")

    def _get(self) -> None:
        path = self.path.split("?")[0]
        if path == "/_fake/stats":
            return self._send(200, self.st.stats())
        if not self._authorized():
            return None
        parts = path.split("/")
        if path == "/v1/models" or path.startswith("/v1/models/"):
            return self._models(parts[3] if len(parts) > 3 else None)
        if path.startswith("/v1/messages/batches/") and len(parts) in (5, 6):
            batch = self.st.batches.get(parts[4])
            if batch is None:
                return self._error(404, "not_found_error", f"no batch {parts[4]}")
            self.st.settle(batch)
            if len(parts) == 5:
                self._count("batches_retrieve")
                return self._send(200, _public(batch))
            if parts[5] == "results":
                self._count("batches_results")
                if batch["processing_status"] != "ended":
                    return self._error(400, "invalid_request_error", "batch has not ended")
                lines = b"".join(json.dumps(r).encode() + b"\n" for r in batch["_results"])
                return self._send(200, lines, content_type="application/binary")
        return self._error(404, "not_found_error", f"no route GET {path}")

    def _models(self, model_id: str | None) -> None:
        """Models API: list the served models, or retrieve one (404 for any other id)."""
        self._count("models")

        def info(m: str) -> dict[str, Any]:
            return {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}

        if model_id is None:
            data = [info(m) for m in self.st.models]
            return self._send(200, {"data": data, "has_more": False,
                                    "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None})
        if model_id not in self.st.models:
            return self._error(404, "not_found_error", f"model: {model_id}")
        return self._send(200, info(model_id))

    def _messages(self, params: dict[str, Any]) -> None:
        st = self.st
        prompt = prompt_of(params)
        with st.lock:
            st.endpoints["messages"] += 1
            st.prompts[prompt] += 1
            st.recent.append(params)
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            charge = self._rate_limited(params)
            if charge is None:
                return
            if st.latency_s:
                time.sleep(st.latency_s)
            fault = st.take_fault(prompt, (*_HTTP_FAULTS, "drop"))
            if fault is not None and fault.kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None:
                status, etype = _HTTP_FAULTS[fault.kind]
                headers = {}
                if fault.retry_after is not None:
                    headers["retry-after"] = f"{fault.retry_after:g}"
                if status == 429:
                    headers["anthropic-ratelimit-requests-remaining"] = "0"
                    headers["anthropic-ratelimit-requests-reset"] = _now_iso(
                        time.time() + (fault.retry_after or 1.0))
                if status in (400, 401, 402):
                    headers["x-should-retry"] = "false"
                message = {"402": "This request would exceed your organization's spend limit."}.get(
                    fault.kind, f"injected {fault.kind}")
                return self._error(status, etype, message, headers)
            if not params.get("model") or not params.get("messages") or not params.get("max_tokens"):
                return self._error(400, "invalid_request_error", "model, messages and max_tokens are required")
            malformed = bool(params.get("tools")) and st.take_fault(prompt, ("malformed",)) is not None
            message = st.answer(params, malformed, st.take_fault(prompt, ("max_tokens",)) is not None)
            usage = message["usage"]
            with st.answered_cond:
                if st.answer_limit is not None and st.endpoints["messages_ok"] >= st.answer_limit:
                    st.held += 1
                    while (st.answer_limit is not None and st.endpoints["messages_ok"] >= st.answer_limit
                           and not st.closing):
                        st.answered_cond.wait()
                    st.held -= 1
                st.endpoints["messages_ok"] += 1
                if charge:
                    st.limits.settle("input-tokens", charge["input-tokens"],
                                     usage["input_tokens"] + usage["cache_creation_input_tokens"])
                    st.limits.settle("output-tokens", charge["output-tokens"], usage["output_tokens"])
            if st.take_fault(prompt, ("malformed_json",)) is not None:
                # answered (and so paid for) but the body ends mid-JSON, as a proxy cutting
                # the stream leaves it: a complete HTTP response the client cannot parse
                body = json.dumps(message).encode()
                return self._send(200, body[: len(body) // 2], self._ratelimit_headers())
            self._send(200, message, self._ratelimit_headers())
        finally:
            with st.lock:
                st.in_flight -= 1

    def _control(self, path: str, body: dict[str, Any]) -> None:
        st = self.st
        if path == "/_fake/inject":
            st.faults.append(Fault(**body))
        elif path == "/_fake/config":
            for key in ("latency_s", "batch_latency_s", "answer_chars", "list_items"):
                if key in body:
                    setattr(st, key, body[key])
            if "rate_limits" in body:  # new limits, full buckets
                limits = _RateLimits(body["rate_limits"] or {})
                with st.lock:
                    st.limits = limits
        else:
            return self._error(404, "not_found_error", f"no control {path}")
        return self._send(200, {"ok": True})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a burst of 128+ connects must not overflow the backlog
    state: _State


class FakeAnthropic:
    """The loopback API server, run on a background thread of this process."""

    def __init__(self, latency_s: float = 0.0, batch_latency_s: float = 0.05,
                 answer_chars: int = 400, api_key: str | None = None,
                 rate_limits: dict[str, int] | None = None, port: int = 0,
                 models: list[str] | None = None):
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.state = _State(latency_s, batch_latency_s, answer_chars, api_key, rate_limits,
                                    models)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base_url to give the SDK."""
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def state(self) -> _State:
        """Shared state (latency, faults, batches) for tests that need to reach in."""
        return self._server.state

    def start(self) -> FakeAnthropic:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        with self.state.answered_cond:
            self.state.closing = True
            self.state.answered_cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, kind: str, times: int = 1, match: str | None = None,
               retry_after: float | None = None) -> Fault:
        """Arm a fault for the next `times` matching requests (-1: all of them)."""
        fault = Fault(kind, times, match, retry_after)
        self.state.faults.append(fault)
        return fault

    def hold_after(self, answers: int) -> None:
        """Answer only this many Messages requests in all; hold later ones until release().

        Makes "stop the client after N answers" deterministic: the client cannot finish
        (or race ahead) however slowly the test process is scheduled.
        """
        with self.state.answered_cond:
            self.state.answer_limit = answers

    def release(self) -> None:
        """Answer held requests and every later one again."""
        with self.state.answered_cond:
            self.state.answer_limit = None
            self.state.answered_cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """Counts per endpoint and per prompt, faults fired, in-flight maximum."""
        return self.state.stats()

    def reset(self) -> None:
        """Zero the counters and disarm every fault."""
        with self.state.lock:
            self.state.reset_stats()
            self.state.faults.clear()
            self.state.answer_limit = None
            self.state.answered_cond.notify_all()


# -- driving a server in another process ------------------------------------------------
def _post(url: str, payload: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def stats_remote(url: str) -> dict[str, Any]:
    """stats() of a server at url."""
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=30) as resp:
        return json.loads(resp.read())


def inject_remote(url: str, kind: str, times: int = 1, match: str | None = None,
                  retry_after: float | None = None) -> None:
    """inject() on a server at url."""
    _post(f"{url}/_fake/inject", asdict(Fault(kind, times, match, retry_after)))


def configure_remote(url: str, **settings: Any) -> None:
    """Change latency_s / batch_latency_s / answer_chars / rate_limits (buckets refilled) at url."""
    _post(f"{url}/_fake/config", settings)


def spawn_server(latency_s: float = 0.0, batch_latency_s: float = 0.05,
                 answer_chars: int = 400, rate_limits: dict[str, int] | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """Start the server in a child process; returns (process, url). Terminate it when done."""
    limits = [f"--limit={kind}={n}" for kind, n in (rate_limits or {}).items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "msmbuild.testing.fake_anthropic", "--latency", str(latency_s),
         "--batch-latency", str(batch_latency_s), "--answer-chars", str(answer_chars), *limits],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError("fake anthropic server did not start")
    return proc, url


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per Messages request")
    parser.add_argument("--batch-latency", type=float, default=0.05, help="seconds until a batch ends")
    parser.add_argument("--answer-chars", type=int, default=400)
    parser.add_argument("--limit", action="append", default=[], metavar="KIND=N",
                        help=f"enforce a per-minute rate limit; KIND is one of {', '.join(RATE_KINDS)}")
    args = parser.parse_args(argv)
    limits = {}
    for item in args.limit:
        kind, _, n = item.partition("=")
        if kind not in RATE_KINDS or not n.isdigit():
            parser.error(f"--limit {item!r}: expected KIND=N with KIND one of {', '.join(RATE_KINDS)}")
        limits[kind] = int(n)
    server = FakeAnthropic(args.latency, args.batch_latency, args.answer_chars, rate_limits=limits,
                           port=args.port)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._server.serve_forever()


if __name__ == "__main__":
    main()
