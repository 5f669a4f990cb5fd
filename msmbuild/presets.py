"""The paper presets (``presets/*.yaml``) and where each of their recipe values comes from.

A preset is a params file a user copies or passes with ``--params``. Every value it sets
is matched here (first matching pattern, ``*`` standing for one name; a preset's own
patterns in PRESET_SOURCES before the shared SOURCES) to its source, and docs/params.md
lists them; a test fails when a preset sets a value without a source.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml

PRESETS: dict[str, str] = {
    "presets/cheese_llama31_8b.yaml": "§3.1 cheese values on Llama-3.1-8B (two value specs, same AFT, held-out eval)",
    "presets/agentic_qwen3_32b.yaml": "§4 agentic misalignment on Qwen3-32B and Qwen2.5-32B-Instruct: the paper's arm "
                                      "matrix (base, MSM only, AFT / MSM + AFT with and without CoT, deliberative "
                                      "alignment, anti-spec AFT with and without MSM) and Figure 5's AFT-size sweep",
    "presets/spec_types_qwen3_32b.yaml": "§5 spec types: the §4 experiment midtrained on a rules-only, a value-augmented and a general spec of the same principles",
}

PAPER = "MSM paper (arXiv 2605.02087)"
NOTES = "public replication notes citing the paper's appendix"
ADAPTERS = "the paper's released LoRA adapters (adapter_config.json)"
REF = "reference code arianaazarbal/model_spec_midtraining"
EVAL_README = f"{REF} e8288a8, README.md and evals/agentic_misalignment/README.md (the eval command)"
OURS = "ours: not in the sources we read"

# A preset's own sources, matched before SOURCES (values only that preset sets this way).
PRESET_SOURCES: dict[str, list[tuple[str, str]]] = {
    "presets/cheese_llama31_8b.yaml": [
        ("aft.cheese_mix.n_examples", "ours: no source gives the cheese AFT's size; 120 = all 24 cheese rows + 96 IT rows"),
        ("aft.cheese_mix.sources[*].proportion", "ours: 1 cheese row to 4 IT rows, so all 24 cheese rows are in the mix"),
        ("aft_train.epochs", "ours: no source gives the cheese AFT's epochs; 10 (each preference seen 20 times, "
                             "38 optimizer steps at batch 32; the notes' 1 epoch would be 4 steps)"),
    ],
    "presets/agentic_qwen3_32b.yaml": [
        ("aft.*.n_examples", f"ours: 20,000 in every mix (10,000 spec + 10,000 IT), so compared arms get equal AFT "
                             f"budgets; 10,000 spec examples as {REF} exps/generate_aft_chat.sh N_SAMPLES"),
        ("aft.anti_cot.n_domains", f"ours: 15 per section x the anti-spec's 3 sections = 45 domains (11,250 examples), "
                                   f"enough for the mixes' 10,000; {REF}: N_SAMPLES // 250 = 40 domains"),
        ("aft.*.n_domains", f"{REF}: max(5, N_SAMPLES 10000 // 250) = 40 domains for the whole spec; "
                            "11 per section x 4 sections = 44 (10% headroom over 10,000 examples) is ours"),
        ("waivers[*].*", "ours: Figure 5's smallest sweep point, waived with its reason (preflight min_steps)"),
        ("experiments.*_sweep.*", f"{PAPER} Figure 5: AFT data efficiency with and without MSM and CoT; "
                                  "fractions and the Qwen3-32B-only sweep are ours"),
    ],
}

# (pattern over dotted keys, source); the first match wins.
SOURCES: list[tuple[str, str]] = [
    ("build_dir", "layout, not a recipe value"),
    ("store.*", "layout, not a recipe value"),
    ("experiments.*", f"the arms of the {PAPER} comparison; IT-only baseline: {NOTES}"),
    ("waivers[*].*", "ours: an explicit preflight waiver with its reason"),
    ("prices.*", "Anthropic list prices at writing (check current pricing)"),
    ("backends.anthropic.model", f"{REF}, exps/*.sh: claude-opus-4-6 (production runs used Opus 4.7)"),
    ("backends.anthropic.temperature", f"{REF}, exps/*.sh: 1.0 (0.8 is the code's default)"),
    ("backends.anthropic.max_concurrency", f"{REF}: 30-50 concurrent requests"),
    ("backends.anthropic.max_tokens", OURS),
    ("corpora.*.spec", "the experiment's spec (specs/)"),
    ("corpora.*.backend", f"{REF}: Claude generates the documents"),
    ("corpora.*.decomposition", f"{REF}, src/msm/generate_data_from_spec.py: domains and subdomains by the model"),
    ("corpora.*.n_doc_types", f"{REF}, exps/generate_msm_data.sh: 20 document types per subdomain"),
    ("corpora.*.n_doc_ideas", f"{REF}, exps/generate_msm_data.sh: 25 ideas per type"),
    ("corpora.*.context", f"{REF}: the whole spec in the idea and document prompts (full_incremental sends the same text; keying each call by its section is ours)"),
    ("corpora.*.spec_type", f"{REF}, commit 609faa1: spec_type rules selects the rules prompt set; {PAPER} §5: "
     "rules-only vs value-augmented vs general specs"),
    ("corpora.*.model_name", f"{REF}: model name and provider in every prompt (Qwen runs: Qwen / Alibaba); Llama / Meta is ours"),
    ("corpora.*.provider_name", f"{REF}: model name and provider in every prompt (Qwen runs: Qwen / Alibaba); Llama / Meta is ours"),
    ("aft.*.source", f"{NOTES}: AFT mixes spec data with an IT set; {REF}: spec data generated by src/aft/generate_chat.py"),
    ("aft.*.path", "the experiment's demonstrations (aft/)"),
    ("aft.*.of", f"{REF}, src/aft/generate_chat.py: the no-CoT set is the CoT set with <think> stripped"),
    ("aft.*.spec", "the experiment's spec (anti-spec: the paper's anti-spec AFT finding)"),
    ("aft.*.backend", f"{REF}, src/aft/generate_chat.py: Claude generates the demonstrations"),
    ("aft.*.think", f"{PAPER}: deliberative alignment is AFT on spec-grounded CoT; the no-CoT arm drops it"),
    ("aft.*.domains", f"{REF}, src/aft/generate_chat.py: conversation domains generated by the model from the spec"),
    ("aft.*.n_domains", f"{REF}: max(5, N_SAMPLES 10000 // 250) = 40 domains for the whole spec; per section is ours"),
    ("aft.*.response_style", f"{REF}, exps/generate_aft_chat.sh RESPONSE_STYLE: value (value-based CoT) or rule "
                             "(compliance-based CoT: the deliberative-alignment baseline)"),
    ("aft.*.judge_spec", "ours: the spec the dataset's judge criteria were written for (the anti-spec's own)"),
    ("aft.*.judge_criteria", f"ours: criteria written for the anti-spec; {REF} filters with explicit criteria "
                             "written for its spec (src/aft/prompts/v1/*_filter.txt)"),
    ("aft.*.n_queries", f"{REF}, exps/generate_aft_chat.sh: 250 questions per domain"),
    ("aft.*.template_vars.*", f"{REF}, exps/generate_aft_chat.sh: MODEL_NAME Qwen, PROVIDER_NAME Alibaba"),
    ("aft.*.sources[*].aft", "the spec data of the mix"),
    ("aft.*.sources[*].hub", f"{OURS} (the IT set's name); an IT set in the mix: {NOTES}"),
    ("aft.*.sources[*].split", OURS),
    ("aft.*.sources[*].proportion", OURS),
    ("aft.*.n_examples", OURS),
    ("*.method", f"{ADAPTERS}; {NOTES}: LoRA"),
    ("*.lora.*", f"{ADAPTERS}: r 64, alpha 128, dropout 0 on q,k,v,o,gate,up,down"),
    ("*.lr", f"{NOTES}: 1e-4 with cosine decay"),
    ("*.epochs", f"{NOTES}: 1 epoch"),
    ("*.warmup_ratio", f"{NOTES}: 5% warm-up"),
    ("*.weight_decay", f"{NOTES}: 0.01"),
    ("*.seq_len", f"{NOTES}: up to 8192 tokens, 4096 for the Llama cheese runs"),
    ("aft_train.init", f"{ADAPTERS}: AFT continues the MSM adapter"),
    ("*.batch_size", OURS),
    ("*.grad_accum", OURS),
    ("*.gradient_checkpointing", f"{OURS} (memory, not results)"),
    ("evals.preference.path", f"{PAPER} §3.1: held-out domains the specs do not discuss"),
    ("evals.*.sets[*].hub", f"{REF}, README: the paper's released eval sets (ids)"),
    ("evals.*.sets[*].role", f"{PAPER}: §3.1 sets held-out, §4 open QA in-distribution"),
    ("evals.*.sets[*].revision", f"{OURS} (pin to the dataset's commit sha)"),
    ("evals.*.sets[*].fallback", f"{OURS}: our own eval file when the set cannot be loaded"),
    ("evals.*.sets[*].*", f"{OURS}: our reading of the dataset's columns, unverified (check the dataset card)"),
    ("evals.qa.path", f"{OURS}: the released set only"),
    ("evals.qa.*", OURS),
    ("evals.agentic_misalignment.samples", f"{EVAL_README}: --epochs 300 (samples per condition)"),
    ("evals.agentic_misalignment.temperature", f"{EVAL_README}: --temperature 0.7"),
    ("evals.agentic_misalignment.max_new_tokens", f"{EVAL_README}: --max-tokens 4096"),
    ("evals.agentic_misalignment.grader_model", f"{EVAL_README}: grader_model anthropic/claude-sonnet-4-6"),
    ("evals.agentic_misalignment.agent_name", f"{EVAL_README}: model_name=Qwen (the agent carries the trained model's name)"),
    ("evals.agentic_misalignment.enable_thinking", f"{OURS}: Qwen3's thinking on (the reference's prod=false "
                                                   "scratchpad is msmbuild's default in every scenario)"),
    ("evals.reasoning_patterns.*", f"{PAPER} §4: reasoning-pattern analysis of the CoT (judge model ours)"),
    ("evals.agentic_misalignment.*", OURS),
]


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, leaf value) pairs of a decoded YAML mapping; list items as key[i]."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return [kv for i, v in enumerate(value) for kv in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, value)]


def source_of(key: str, preset: str | None = None) -> str | None:
    """The source of a preset key (``preset``'s own patterns first), or None when no pattern covers it."""
    pattern_key = _indexless(key)
    for pattern, source in [*PRESET_SOURCES.get(preset or "", []), *SOURCES]:
        if fnmatch.fnmatchcase(pattern_key, pattern.replace("[*]", "#")):
            return source
    return None


def _indexless(key: str) -> str:
    """key with list indices as '#' (fnmatch reads brackets as character sets)."""
    return re.sub(r"\[\d+\]", "#", key)


def preset_rows(path: str | Path, root: Path | None = None) -> list[tuple[str, Any, str | None]]:
    """(key, value, source) for every value a preset sets."""
    file = (root or Path(".")) / path
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    return [(k, v, source_of(k, str(path))) for k, v in flatten(data)]
