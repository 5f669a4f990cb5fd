"""Tokens and dollars of spec context: the paper's request pattern against msmbuild's policies.

Every configuration runs the same spec and shape through the real ``anthropic`` SDK and
msmbuild's anthropic backend against the loopback server, whose usage accounting follows
the API (prompt caching only above the model's minimum prefix; cache writes and reads
reported separately); dollars come from genai-prices for the model.

- (a) reference: the request pattern of the paper's public generator, built from its
  prompt structure: one domains call and one subdomains call per domain with the whole
  spec, assertions per subdomain (its section), doc types per subdomain (the assertions),
  ideas per doc type and one document per idea with the whole spec, all uncached;
- (b) msmbuild ``context: section`` (own section plus preamble);
- (c) msmbuild ``context: full_incremental`` (the whole spec first in every call, cached);
- (d) msmbuild strict ``context: full`` (the whole spec in every key), for the edit.

Then one section of the spec is edited and (c) and (d) are rebuilt: the edit's cost. (c) is
also built with Message Batches on (the default threshold batches every stage).

Each msmbuild configuration is reported per stage: requests, uncached / cache-write /
cache-read / output tokens and $, and the floor of its layout: every request's varying part
and the first sending of every block (spec, a stage's instructions, a subdomain's part) at
the plain input price, every later sending of a block at the cache-read price (where the
prefix up to it reaches the model's cacheable minimum; below it the API caches nothing),
the output at the output price (batched: the batch discount on all of it), i.e. perfect
caching with no write premium. ``× floor`` is the configuration's $ over that floor.

    python -m bench.context [SPEC.md] [--types 2 --ideas 2 --assertions 2 --doc-chars 6000]

The loopback server answers lists with exactly the count asked (no top-ups) and text
with ``--doc-chars`` characters (6000 ≈ 1500 tokens, msmbuild plan's document size).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from msmbuild.config import AnthropicConfig, BatchConfig, load_params
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
from msmbuild.generate.backends.base import GenRequest, Usage
from msmbuild.generate.backends.pricing import cost_usd
from msmbuild.generate.caching import input_blocks, split_input
from msmbuild.generate.calls import CallStats, run_requests
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.partitions import read_calls
from msmbuild.generate.prompts import CORPUS_STAGES, SPEC_TYPES, load_prompt
from msmbuild.generate.stages import iter_subdomains, structural_tree
from msmbuild.layout import Layout
from msmbuild.spec import parse_spec
from msmbuild.store import Store
from msmbuild.testing import FakeAnthropic

SPEC = next((p / "shared" / "corpora" / "openai-model-spec" / "model_spec_2025-12-18.md"
             for p in Path(__file__).resolve().parents if (p / "shared" / "corpora").is_dir()),
            Path("model_spec_2025-12-18.md"))
MODEL = "claude-opus-4-6"  # the paper's generator in its scripts


@dataclass
class Row:
    """One measured configuration."""

    name: str
    calls: int
    input_tokens: int
    cache_write: int
    cache_read: int
    output_tokens: int
    cost_usd: float
    wall_s: float

    @classmethod
    def of(cls, name: str, stats: CallStats, wall_s: float) -> Row:
        return cls(name, stats.misses, stats.input_tokens, stats.cache_creation_input_tokens,
                   stats.cache_read_input_tokens, stats.output_tokens, stats.cost_usd, wall_s)


def _anthropic_params(url: str, batch: bool = False) -> dict:
    return {"model": MODEL, "base_url": url, "http_client": "httpx", "max_concurrency": 16,
            "batch": {"enabled": True, "poll_initial_s": 0.05, "poll_max_s": 0.2} if batch else {"enabled": False}}


@dataclass
class StageRow:
    """One stage of one configuration: what it sent and cost, and its layout's floor."""

    stage: str
    requests: int = 0
    uncached: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0
    cost_usd: float = 0.0
    floor_usd: float = 0.0


def _stage_of(params: dict) -> str:
    """The corpus stage of a request: its forced tool in a shared tool list, else its system text
    (doc types and ideas share one; only an ideas request names a document type)."""
    name = (params.get("tool_choice") or {}).get("name", "")
    if name.removeprefix("emit_") in CORPUS_STAGES:
        return name.removeprefix("emit_")
    system = " ".join(str(b.get("text", "")) for b in params.get("system") or [])
    for stage in CORPUS_STAGES:
        if any(load_prompt(stage, variant).system in system for variant in SPEC_TYPES):
            user = " ".join(str(b.get("text", "")) for b in input_blocks({"messages": params.get("messages")}))
            return "ideas" if stage == "doc_types" and "Document type:" in user else stage
    return "other"


def stage_table(rows: list[dict], bodies: list[dict], batched: bool) -> list[StageRow]:
    """Per stage: the calls rows made (not cached) and the floor of the bodies sent for them."""
    stages: dict[str, StageRow] = {}
    for r in rows:
        st = stages.setdefault(r["stage"], StageRow(r["stage"]))
        st.requests += 1
        st.uncached += r["input_tokens"]
        st.cache_write += r["cache_creation_input_tokens"]
        st.cache_read += r["cache_read_input_tokens"]
        st.output += r["output_tokens"]
        st.cost_usd += r["cost_usd"]
    seen: set[str] = set()
    floor_in: dict[str, list[int]] = {}
    for params in bodies:
        tools = str(params.get("tools") or "")
        blocks = [(str(b.get("text", "")), True) for b in input_blocks(params)]
        blocks[-1] = (blocks[-1][0], False)  # what varies is never read from a cache
        split = split_input(MODEL, tools, blocks, seen)
        seen.update(split.new_entries)
        acc = floor_in.setdefault(_stage_of(params), [0, 0])
        acc[0] += split.plain + split.write
        acc[1] += split.read
    for name, (plain, read) in floor_in.items():
        st = stages.setdefault(name, StageRow(name))
        st.floor_usd = cost_usd(MODEL, Usage(input_tokens=plain, cache_read_input_tokens=read,
                                             output_tokens=st.output), {}, batched)
    return list(stages.values())


def _recording(server: FakeAnthropic) -> list[dict]:
    """Every request body the server answers (Messages and batch items), in order."""
    bodies: list[dict] = []
    usage = server.state.usage

    def record(params: dict, text: str) -> dict:
        bodies.append(params)
        return usage(params, text)

    server.state.usage = record  # type: ignore[method-assign]
    return bodies


def _made_calls(root: Path, since: float) -> list[dict]:
    return [r for r in read_calls(Layout(root / "build"), "c").to_pylist()
            if not r["cache_hit"] and not r["error"] and (r["made_at"] or 0.0) >= since]


def reference_pattern(spec_path: Path, url: str, shape: dict, store_dir: Path) -> Row:
    """The reference's calls, prompts built from its structure (spec in the prompt, no caching)."""
    spec = parse_spec(spec_path, {"model_name": "Llama", "provider_name": "Meta"})
    whole = spec.full_text
    tree = structural_tree(spec)
    backend = AnthropicBackend(AnthropicConfig(**{**_anthropic_params(url), "prompt_caching": False,
                                                  "batch": BatchConfig(enabled=False)}),
                               {}, state_dir=store_dir / "batches")
    store = Store(store_dir)
    total, start = CallStats(), time.perf_counter()

    def item_list(name: str, *fields: str) -> dict:
        props = {f: {"type": "string"} for f in fields}
        return {"type": "object", "required": [name], "properties": {name: {
            "type": "array", "minItems": 1, "items": {"type": "object", "required": list(fields),
                                                      "properties": props}}}}

    def ask(stage: str, prompts: list[str], schema: dict | None) -> None:
        reqs = [GenRequest(stage=stage, prompt=p, schema=schema, max_tokens=8192, temperature=0.8)
                for p in prompts]
        _, stats, _ = run_requests(store, backend, reqs, desc=stage, progress=False)
        total.add(stats)

    domains = tree["domains"]
    ask("domains", [f"Spec:\n{whole}\n\nList the domains of this spec."], item_list("domains", "domain"))
    ask("subdomains", [f"Spec:\n{whole}\n\nDomain: {d['title']}\nList its subdomains." for d in domains],
        item_list("subdomains", "subdomain", "subdomain_context", "spec_section"))
    subs = iter_subdomains(tree)
    ask("assertions", [f"Subdomain: {s['title']}\nSection:\n{s['excerpt']}\nList {shape['assertions']} assertions."
                       for s in subs], item_list("assertions", "assertion", "name", "explanation", "label"))
    claims = "\n".join(f"- assertion {i} (Explanation: ...)" for i in range(shape["assertions"]))
    ask("doc_types", [f"Subdomain: {s['title']}\nAssertions:\n{claims}\nList {shape['types']} document types."
                      for s in subs], item_list("doc_types", "doc_type", "description"))
    ask("ideas", [f"Spec:\n{whole}\n\nSubdomain: {s['title']} ({s['context']})\nAssertions:\n{claims}\n"
                  f"Document type {t}: a description.\nModel: Llama by Meta.\nList {shape['ideas']} ideas."
                  for s in subs for t in range(shape["types"])], item_list("doc_ideas", "idea", "name"))
    ask("document", [f"Spec:\n{whole}\n\nSubdomain: {s['title']}\nAssertions:\n{claims}\nType {t}, idea {i}.\n"
                     "Model: Llama by Meta. Plan in <scratchpad>, write in <content>."
                     for s in subs for t in range(shape["types"]) for i in range(shape["ideas"])], None)
    backend.close()
    return Row.of("(a) reference pattern: whole spec in every prompt, uncached", total,
                  time.perf_counter() - start)


def _workspace(root: Path, spec_path: Path, url: str, context: str, shape: dict, batch: bool = False) -> None:
    (root / "specs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec_path, root / "specs" / "spec.md")
    params = {"store": {"path": str(root / "store")}, "build_dir": str(root / "build"),
              "backends": {"anthropic": _anthropic_params(url, batch)},
              "corpora": {"c": {"spec": str(root / "specs" / "spec.md"), "backend": "anthropic",
                                "context": context, "n_assertions": shape["assertions"],
                                "n_doc_types": shape["types"], "n_doc_ideas": shape["ideas"],
                                "filters": {"dedup_threshold": 1.0, "drop_unsuitable": False}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def _build(root: Path, name: str) -> Row:
    start = time.perf_counter()
    stats = CallStats()
    for report in generate_corpus(load_params(root / "params.yaml"), "c", progress=False):
        stats.add(report.stats)
    return Row.of(name, stats, time.perf_counter() - start)


def _edit_one_section(root: Path) -> str:
    """Change one sentence of the longest section; returns its id."""
    path = root / "specs" / "spec.md"
    spec = parse_spec(path)
    sec = max((s for s in spec.sections if s.parent is not None), key=lambda s: len(s.text))
    text = path.read_text(encoding="utf-8")
    first_line = next(line for line in sec.text.splitlines() if len(line.split()) > 6)
    path.write_text(text.replace(first_line, first_line + " (This sentence was edited.)", 1), encoding="utf-8")
    return sec.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(SPEC))
    parser.add_argument("--assertions", type=int, default=2)
    parser.add_argument("--types", type=int, default=2)
    parser.add_argument("--ideas", type=int, default=2)
    parser.add_argument("--doc-chars", type=int, default=6000)
    parser.add_argument("--only", nargs="*", help="msmbuild policies to run (default: all)")
    args = parser.parse_args()
    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise SystemExit(f"{spec_path}: not found (give a spec path)")
    shape = {"assertions": args.assertions, "types": args.types, "ideas": args.ideas}
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench")
    spec = parse_spec(spec_path)
    print(f"spec {spec_path.name}: {len(spec.full_text)} characters (~{len(spec.full_text) // 4} tokens), "
          f"{len(iter_subdomains(structural_tree(spec)))} subdomains; shape {shape}; model {MODEL}; "
          f"documents {args.doc_chars} characters; load {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    tables: list[tuple[str, list[StageRow]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="msm-context-bench-"))
    try:
        for context, name, batch in (("reference", "", False), ("section", "(b) msmbuild section", False),
                                     ("full_incremental", "(c) msmbuild full_incremental, cached", False),
                                     ("full_incremental", "(c) msmbuild full_incremental, cached, batched", True),
                                     ("full", "(d) msmbuild strict full, cached", False)):
            if args.only and context not in args.only and context != "reference":
                continue
            # one server per configuration: each starts with an empty prompt cache
            with FakeAnthropic(answer_chars=args.doc_chars) as server:
                server.state.list_items = max(shape.values())
                if context == "reference":
                    rows.append(reference_pattern(spec_path, server.url, shape, tmp / "ref-store"))
                    continue
                bodies = _recording(server)
                root = tmp / f"{context}-{int(batch)}"
                _workspace(root, spec_path, server.url, context, shape, batch)
                start = time.time()
                rows.append(_build(root, f"{name}: full build"))
                tables.append((rows[-1].name, stage_table(_made_calls(root, start), bodies, batch)))
                if context != "section" and not batch:
                    sent = len(bodies)
                    edited = _edit_one_section(root)
                    start = time.time()
                    rows.append(_build(root, f"{name}: one-section edit (#{edited})"))
                    tables.append((rows[-1].name, stage_table(_made_calls(root, start), bodies[sent:], batch)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = rows[0].cost_usd
    print("| configuration | new calls | input tok | cache write tok | cache read tok | output tok | USD | × (a) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r.name} | {r.calls} | {r.input_tokens:,} | {r.cache_write:,} | {r.cache_read:,} | "
              f"{r.output_tokens:,} | {r.cost_usd:.2f} | {r.cost_usd / ref:.3f} |")
    print()
    print("| configuration | stage | requests | uncached in | cache write | cache read | output | $ | floor $ | × floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, stages in tables:
        total = StageRow("all")
        for st in stages:
            print(f"| {name} | {st.stage} | {st.requests} | {st.uncached:,} | {st.cache_write:,} | "
                  f"{st.cache_read:,} | {st.output:,} | {st.cost_usd:.2f} | {st.floor_usd:.2f} | "
                  f"{st.cost_usd / st.floor_usd if st.floor_usd else 0:.3f} |")
            for f in ("requests", "uncached", "cache_write", "cache_read", "output", "cost_usd", "floor_usd"):
                setattr(total, f, getattr(total, f) + getattr(st, f))
        print(f"| {name} | **all** | {total.requests} | {total.uncached:,} | {total.cache_write:,} | "
              f"{total.cache_read:,} | {total.output:,} | {total.cost_usd:.2f} | {total.floor_usd:.2f} | "
              f"**{total.cost_usd / total.floor_usd if total.floor_usd else 0:.3f}** |")


if __name__ == "__main__":
    main()
