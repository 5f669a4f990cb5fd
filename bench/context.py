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

Then one section of the spec is edited and (c) and (d) are rebuilt: the edit's cost.

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
from msmbuild.generate.backends.base import GenRequest
from msmbuild.generate.calls import CallStats, run_requests
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.stages import iter_subdomains, structural_tree
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


def _anthropic_params(url: str) -> dict:
    return {"model": MODEL, "base_url": url, "http_client": "httpx", "max_concurrency": 16,
            "batch": {"enabled": False}}


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


def _workspace(root: Path, spec_path: Path, url: str, context: str, shape: dict) -> None:
    (root / "specs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec_path, root / "specs" / "spec.md")
    params = {"store": {"path": str(root / "store")}, "build_dir": str(root / "build"),
              "backends": {"anthropic": _anthropic_params(url)},
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
    tmp = Path(tempfile.mkdtemp(prefix="msm-context-bench-"))
    try:
        for context, name in (("reference", ""), ("section", "(b) msmbuild section"),
                              ("full_incremental", "(c) msmbuild full_incremental, cached"),
                              ("full", "(d) msmbuild strict full, cached")):
            # one server per configuration: each starts with an empty prompt cache
            with FakeAnthropic(answer_chars=args.doc_chars) as server:
                server.state.list_items = max(shape.values())
                if context == "reference":
                    rows.append(reference_pattern(spec_path, server.url, shape, tmp / "ref-store"))
                    continue
                root = tmp / context
                _workspace(root, spec_path, server.url, context, shape)
                rows.append(_build(root, f"{name}: full build"))
                if context != "section":
                    edited = _edit_one_section(root)
                    rows.append(_build(root, f"{name}: one-section edit (#{edited})"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = rows[0].cost_usd
    print("| configuration | new calls | input tok | cache write tok | cache read tok | output tok | USD | × (a) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r.name} | {r.calls} | {r.input_tokens:,} | {r.cache_write:,} | {r.cache_read:,} | "
              f"{r.output_tokens:,} | {r.cost_usd:.2f} | {r.cost_usd / ref:.3f} |")


if __name__ == "__main__":
    main()
