"""Rehearse a params file on a CPU: the whole Snakemake DAG with stand-ins, in a scratch workspace.

A real MSM run spends thousands of dollars and tens of GPU-hours; a recipe that cannot work
should fail for free first. ``derive`` turns the user's params into a scaled-down copy that
keeps every corpus, AFT dataset and mix, experiment arm (every sweep point), eval suite and
the report, and replaces what costs money or needs a GPU or the network:

- every generation, AFT-data and judge backend -> ``offline``; the agentic grader ->
  the ``verdict/no`` stand-in (msmbuild.evaluate.am_verdict); vLLM -> transformers;
- each base model other than ``tiny`` -> a tiny locally built model of the same chat
  template family (Qwen3's thinking switch for Qwen3 bases), one per distinct base model,
  named after it, so distinct bases stay distinct arms and keep their family name;
- each ``hub:`` dataset -> a local dataset directory of the same shape, read by the same
  ``datasets.load_dataset`` path: an AFT mix's chat source gets chat rows, an eval set rows
  in the columns its mapping names (from its fallback file's items); any other shape is an
  error;
- counts shrink: few subdomains, doc types, ideas, AFT domains and queries, two optimizer
  steps per training stage, a few eval items per (role, domain), one goal value and two
  samples per agentic scenario, a few generated tokens.

``rehearse`` writes that copy and the files it names into a temporary workspace with its
own build/ and store, runs ``snakemake --cores all`` there, and summarizes what was built.
Nothing is written to the user's build/, store or remote.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from msmbuild.config import Params, TinyModelConfig, load_params, validate_params
from msmbuild.errors import ParamsError, RehearsalError
from msmbuild.hashing import digest_text

WORKSPACE_PARAMS = "params.yaml"
STAND_IN_DIR = "models"            # tiny stand-ins for base models, workspace-relative
FIXTURE_DIR = "fixtures/hub"       # local stand-ins for hub datasets
OUTSIDE_DIR = "inputs"             # copies of input files that live outside the project
LOG_NAME = "snakemake.log"
PROJECT_FILES = ("Snakefile", "rules")
REHEARSAL_WAIVER = ("msmbuild rehearse: stand-in training of a few optimizer steps on tiny data; the real "
                    "recipe's sizes are checked on the real params")


@dataclass(frozen=True)
class RehearsalScale:
    """How small the rehearsal is (every count is a cap: smaller values in params stay)."""

    doc_types: int = 2            # corpora.*.n_doc_types
    doc_ideas: int = 2            # corpora.*.n_doc_ideas
    subdomains: int = 2           # corpora.*.max_subdomains
    assertions: int = 2           # corpora.*.n_assertions
    aft_domains: int = 1          # aft.*.n_domains
    aft_queries: int = 3          # aft.*.n_queries
    backfill_rounds: int = 1      # aft.*.backfill_rounds
    train_steps: int = 2          # midtrain/aft_train max_steps
    batch_size: int = 2
    midtrain_seq_len: int = 256
    aft_seq_len: int = 512
    items_per_group: int = 2      # eval items kept per (role, domain)
    agentic_samples: int = 1      # samples per agentic condition
    goal_values: int = 1          # agentic goal values kept (every scenario and goal type stays)
    urgency_types: int = 1
    max_new_tokens: int = 8       # every eval's generation budget
    fixture_rows: int = 16        # rows of a hub dataset's stand-in
    grader_model: str = "verdict/no"


@dataclass(frozen=True)
class Change:
    """One replacement the rehearsal makes: params key, the value it had, what stands in."""

    key: str
    was: Any
    now: Any

    def describe(self) -> str:
        return f"{self.key}: {_short(self.was)} -> {_short(self.now)}"


@dataclass
class Derived:
    """The scaled params and what the workspace needs besides them."""

    params: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)     # workspace path -> input file, copied
    samples: dict[str, Path] = field(default_factory=dict)   # workspace path -> eval file, sampled
    fixtures: dict[str, str] = field(default_factory=dict)   # workspace dir -> messages field (chat rows)
    # workspace dir -> (eval set entry, its fallback file or None): rows in the set's own columns
    eval_sets: dict[str, tuple[dict[str, Any], Path | None]] = field(default_factory=dict)
    stand_ins: dict[str, tuple[str, str]] = field(default_factory=dict)  # workspace dir -> (base model, template)
    sweep_values: dict[str, dict[Any, Any]] = field(default_factory=dict)  # experiment -> {real: rehearsed}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.rstrip("/").split("/")[-1]) or "model"


# -- deriving the scaled params ------------------------------------------------------------
def derive(params: Params, project: Path | str = ".", scale: RehearsalScale | None = None) -> Derived:
    """The rehearsal's params (a plain mapping, valid params.yaml) and its workspace inputs.

    Generic over params: backends, graders, engines and hub entries are found wherever
    they occur; counts are capped per section; every file the params name is copied (eval
    data files sampled). Arms, sweeps, suites and the report stay as they are.
    """
    scale = scale or RehearsalScale()
    project = Path(project).resolve()
    raw = params.model_dump(mode="json")
    out = Derived(params=copy.deepcopy(raw))
    p = out.params

    def change(key: str, node: dict[str, Any], name: str, value: Any) -> None:
        if node.get(name) != value:
            out.changes.append(Change(key, node.get(name), value))
            node[name] = value

    def cap(key: str, node: dict[str, Any], name: str, most: int) -> None:
        if node.get(name) is None or node[name] > most:
            change(key, node, name, most)

    change("build_dir", p, "build_dir", "build")
    store = p["store"]
    for name, value in (("path", "store"), ("remote", None), ("write_through", False), ("dvc_remote", False)):
        change(f"store.{name}", store, name, value)

    _stand_in_services(p, "", out, scale)
    substitute_hub(p, "", out, scale, project)

    for name, corpus in p["corpora"].items():
        key = f"corpora.{name}"
        cap(f"{key}.n_doc_types", corpus, "n_doc_types", scale.doc_types)
        cap(f"{key}.n_doc_ideas", corpus, "n_doc_ideas", scale.doc_ideas)
        cap(f"{key}.max_subdomains", corpus, "max_subdomains", scale.subdomains)
        cap(f"{key}.n_assertions", corpus, "n_assertions", scale.assertions)
        cap(f"{key}.n_samples", corpus, "n_samples", 1)
        change(f"{key}.budget_usd", corpus, "budget_usd", None)
    for name, data in p["aft"].items():
        key = f"aft.{name}"
        if data["source"] == "generated":
            cap(f"{key}.n_domains", data, "n_domains", scale.aft_domains)
            cap(f"{key}.n_queries", data, "n_queries", scale.aft_queries)
            cap(f"{key}.backfill_rounds", data, "backfill_rounds", scale.backfill_rounds)
        if data["source"] == "mix":  # the most the small sources give
            change(f"{key}.n_examples", data, "n_examples", None)
    for stage, seq_len in (("midtrain", scale.midtrain_seq_len), ("aft_train", scale.aft_seq_len)):
        train = p[stage]
        cap(f"{stage}.max_steps", train, "max_steps", scale.train_steps)
        cap(f"{stage}.batch_size", train, "batch_size", scale.batch_size)
        cap(f"{stage}.grad_accum", train, "grad_accum", 1)
        cap(f"{stage}.seq_len", train, "seq_len", seq_len)
        cap(f"{stage}.gpus", train, "gpus", 1)
        change(f"{stage}.fsdp", train, "fsdp", False)
    _scale_evals(p, out, scale, change, cap)
    _stand_in_models(p, out, change)
    _scale_sweeps(p, out)
    _collect_files(p, "", out, project)
    try:
        scaled = validate_params(p, "rehearsal params")
    except ParamsError as exc:  # a derivation bug, or a params shape it does not know
        raise RehearsalError(f"cannot derive the rehearsal's params: {exc}") from None
    _waive_stand_in_sizes(p, scaled, out)
    return out


def _waive_stand_in_sizes(p: dict[str, Any], scaled: Params, out: Derived) -> None:
    """Waive the size checks for the stand-in training (the build's own preflight would refuse
    two optimizer steps on a non-tiny base); the real sizes are checked on the real params."""
    from msmbuild.experiments import expand_arms

    trained = [a.name for a in expand_arms(scaled) if a.midtrain or a.aft]
    have = {(w["check"], w["target"]) for w in p["waivers"]}
    added = [{"check": check, "target": name, "reason": REHEARSAL_WAIVER}
             for name in trained for check in ("min_steps", "equal_aft_budget") if (check, name) not in have]
    if added:
        p["waivers"] = p["waivers"] + added
        out.changes.append(Change("waivers", f"{len(have)} entries",
                                  f"+{len(added)} for the stand-in sizes (min_steps, equal_aft_budget per trained arm)"))


def _stand_in_services(node: Any, key: str, out: Derived, scale: RehearsalScale) -> None:
    """Offline backends and judges, the stand-in grader, transformers for vLLM, no embedding models."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _stand_in_services(item, f"{key}[{i}]", out, scale)
        return
    if not isinstance(node, dict):
        return
    here = key + "." if key else ""
    for name in list(node):
        value, where = node[name], here + name
        if key in ("", "backends") and name == "backends":
            continue  # the backends' own settings stay (only who uses them changes)
        replacement: Any = value
        if name in ("backend", "judge_backend") and value not in (None, "offline"):
            replacement = "offline"
        elif name == "grader_model" and value != scale.grader_model:
            replacement = scale.grader_model
        elif name == "engine" and value == "vllm":
            replacement = "hf"
        elif name == "vllm_args" and value:
            replacement = {}
        elif (name == "embedding_model" or where.endswith("embedding.path")) and value is not None:
            replacement = None  # the lexical measures stand in
        if replacement is not value and replacement != value:
            out.changes.append(Change(where, value, replacement))
            node[name] = replacement
        else:
            _stand_in_services(value, where, out, scale)


def substitute_hub(node: Any, key: str, out: Derived, scale: RehearsalScale, project: Path | str = ".") -> None:
    """Replace every ``hub:`` dataset by a local dataset directory of its shape, or fail naming the key.

    Shapes: an AFT mix source (chat rows in its ``messages_field``) and an eval set (rows in
    the dataset columns its ``columns`` mapping names, made from its fallback file's items
    when it has one); both are read by the same ``datasets.load_dataset`` code as a hub id.
    """
    if isinstance(node, list):
        for i, item in enumerate(node):
            substitute_hub(item, f"{key}[{i}]", out, scale, project)
        return
    if not isinstance(node, dict):
        return
    hub = node.get("hub")
    if isinstance(hub, str) and hub:
        if re.fullmatch(r"aft\.[^.]+\.sources\[\d+\]", key):  # chat rows of an AFT mix
            field_name = node.get("messages_field") or "messages"
            target = f"{FIXTURE_DIR}/{_slug(hub)}-{digest_text(hub + ':' + field_name)[:8]}"
            out.fixtures[target] = field_name
            what = f"{scale.fixture_rows} local chat rows"
        elif key.startswith("evals.") and isinstance(node.get("columns"), dict):  # an eval set
            target = f"{FIXTURE_DIR}/{_slug(hub)}-{digest_text(key + ':' + hub)[:8]}"
            fallback = node.get("fallback")
            path = (Path(project) / fallback) if fallback else None
            out.eval_sets[target] = (copy.deepcopy(node), path if path is not None and path.is_file() else None)
            what = "local rows in its columns" + (f", from {fallback}" if fallback else "")
        else:
            raise RehearsalError(
                f"{key}.hub: no local stand-in for hub dataset {hub!r} of this shape (rehearse knows AFT mix "
                "sources of chat rows and eval sets with a columns mapping)")
        out.changes.append(Change(f"{key}.hub", hub, f"./{target} ({what})"))
        node.update(hub=f"./{target}", split="train", revision=None)
    for name, value in node.items():
        substitute_hub(value, f"{key}.{name}" if key else name, out, scale, project)


def eval_set_rows(entry: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dataset rows of an eval set's shape: each item's fields in the columns the set maps them from.

    ``items`` are items of the suite's own format (its fallback file's); a field an item
    lacks gets a stand-in value. The favoured column is written in the set's encoding.
    """
    columns, fav = entry["columns"], entry.get("favoured")
    rows = []
    for i, item in enumerate(items):
        pair = list(item.get("items") or [f"stand-in option A {i}", f"stand-in option B {i}"])[:2]
        favoured = (item.get("favoured") or {}).get(fav["value"], 0) if fav else 0
        favoured = favoured if favoured in (0, 1) else 0
        if fav and fav.get("encoding") == "first" and favoured == 1:
            pair, favoured = pair[::-1], 0
        row: dict[str, Any] = {}
        for name, column in columns.items():
            if name == "items":
                row[column[0]], row[column[1]] = pair
            else:
                value = item.get(name)
                row[column] = str(value) if value is not None else f"stand-in {name} {i}"
        if fav and fav.get("column"):
            encoding = fav["encoding"]
            if encoding == "index":
                row[fav["column"]] = favoured
            elif encoding == "text":
                row[fav["column"]] = pair[favoured]
            else:  # label
                labels = [label for label, index in fav.get("labels", {}).items() if index == favoured]
                if not labels:
                    raise RehearsalError(f"eval set {entry.get('name')!r}: favoured.labels has no label for item {favoured}")
                row[fav["column"]] = labels[0]
        rows.append(row)
    return rows


def _scale_evals(p: dict[str, Any], out: Derived, scale: RehearsalScale, change: Callable, cap: Callable) -> None:
    """Fewer generated tokens, samples, goal values and urgencies; every scenario and suite stays."""
    for suite, cfg in p["evals"].items():
        if not isinstance(cfg, dict):
            continue
        key = f"evals.{suite}"
        if "max_new_tokens" in cfg:
            cap(f"{key}.max_new_tokens", cfg, "max_new_tokens", scale.max_new_tokens)
        if "samples" in cfg:
            cap(f"{key}.samples", cfg, "samples", scale.agentic_samples)
        for name, most in (("goal_values", scale.goal_values), ("urgency_types", scale.urgency_types)):
            if isinstance(cfg.get(name), list) and len(cfg[name]) > most:
                change(f"{key}.{name}", cfg, name, cfg[name][:most])


def _stand_in_models(p: dict[str, Any], out: Derived, change: Callable) -> None:
    """A tiny stand-in per distinct base model, in a directory named after it (its family name stays)."""
    from msmbuild.models import chat_template_family

    by_base: dict[str, str] = {}
    for name, exp in p["experiments"].items():
        base = exp["base_model"]
        if base == "tiny":
            continue
        if base not in by_base:
            slug, n = _slug(base.partition("@")[0]), 1
            target = f"{STAND_IN_DIR}/{slug}"
            while target in out.stand_ins:
                n += 1
                target = f"{STAND_IN_DIR}/{slug}-{n}"
            out.stand_ins[target] = (base, chat_template_family(base))
            by_base[base] = f"./{target}"
        change(f"experiments.{name}.base_model", exp, "base_model", by_base[base])


def _scale_sweeps(p: dict[str, Any], out: Derived) -> None:
    """A sweep over a mix's n_examples keeps its points, in order, as small distinct sizes."""
    for name, exp in p["experiments"].items():
        for key, values in exp.get("sweep", {}).items():
            if key.endswith(".n_examples") and values:
                order = sorted(set(values))
                mapping = {v: 2 * (order.index(v) + 1) for v in values}
                exp["sweep"][key] = [mapping[v] for v in values]
                out.sweep_values[name] = mapping
                out.changes.append(Change(f"experiments.{name}.sweep.{key}", values, exp["sweep"][key]))


def _collect_files(node: Any, key: str, out: Derived, project: Path) -> None:
    """Every input file the params name goes into the workspace; eval data files are sampled."""
    if isinstance(node, dict):
        for name, value in node.items():
            if key == "" and name in ("build_dir", "store"):
                continue
            if isinstance(value, str):
                node[name] = _place_file(value, f"{key}.{name}" if key else name, out, project)
            else:
                _collect_files(value, f"{key}.{name}" if key else name, out, project)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, str):
                node[i] = _place_file(value, f"{key}[{i}]", out, project)
            else:
                _collect_files(value, f"{key}[{i}]", out, project)


def _place_file(value: str, key: str, out: Derived, project: Path) -> str:
    """The workspace path of an input file named at key (the value itself when it is no file)."""
    if not value or "\n" in value or len(value) > 4096:
        return value
    path = Path(value) if Path(value).is_absolute() else project / value
    try:
        if not path.is_file():
            return value
    except OSError:
        return value
    resolved = path.resolve()
    if resolved.is_relative_to(project) and not Path(value).is_absolute():
        rel = resolved.relative_to(project).as_posix()
    else:
        rel = f"{OUTSIDE_DIR}/{digest_text(str(resolved))[:8]}-{resolved.name}"
    sampled = key.startswith("evals.") and resolved.suffix == ".jsonl"
    (out.samples if sampled else out.files)[rel] = resolved
    return rel


# -- the workspace ----------------------------------------------------------------------------
def sample_items(lines: list[str], per_group: int) -> list[str]:
    """The first per_group items of each (role, domain) of a jsonl eval file, in file order."""
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for line in lines:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            kept.append(line)  # the suite's own reader reports it, as it would in the real run
            continue
        group = (str(item.get("role")), str(item.get("domain"))) if isinstance(item, dict) else ("", "")
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= per_group:
            kept.append(line)
    return kept


def fixture_rows(n: int, field_name: str = "messages") -> list[dict[str, Any]]:
    """Chat rows of an instruction-tuning set's shape (a stand-in: no content of value)."""
    colours = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black"]
    return [{field_name: [
        {"role": "user", "content": f"Stand-in instruction {i}: name a colour and spell it backwards."},
        {"role": "assistant", "content": f"{colours[i % len(colours)]}, backwards {colours[i % len(colours)][::-1]}."},
    ]} for i in range(n)]


def prepare_workspace(derived: Derived, project: Path | str, workspace: Path | str,
                      scale: RehearsalScale | None = None, tiny: TinyModelConfig | None = None) -> Path:
    """Write the workflow, the scaled params.yaml, the inputs, fixtures and stand-in models."""
    scale = scale or RehearsalScale()
    project, ws = Path(project), Path(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = project / name
        if not src.exists():
            raise RehearsalError(f"{src}: not found; run msmbuild rehearse from the project directory "
                                 "(the one holding the Snakefile and rules/)")
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, ws / name)
    for rel, src in derived.files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, ws / rel)
    for rel, src in derived.samples.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
        (ws / rel).write_text("".join(sample_items(lines, scale.items_per_group)), encoding="utf-8")
    for rel, field_name in derived.fixtures.items():
        (ws / rel).mkdir(parents=True, exist_ok=True)
        rows = fixture_rows(scale.fixture_rows, field_name)
        (ws / rel / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for rel, (entry, fallback) in derived.eval_sets.items():
        (ws / rel).mkdir(parents=True, exist_ok=True)
        if fallback is not None:
            lines = sample_items(fallback.read_text(encoding="utf-8").splitlines(), scale.items_per_group)
            items = [json.loads(line) for line in lines]
        else:
            items = [{} for _ in range(scale.fixture_rows)]
        # every row of a set has the set's role: only the fallback's items of that role stand in
        items = [i for i in items if isinstance(i, dict) and i.get("role", entry.get("role")) == entry.get("role")]
        rows = eval_set_rows(entry, items[: scale.fixture_rows] or [{} for _ in range(scale.fixture_rows)])
        (ws / rel / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if derived.stand_ins:
        from msmbuild.models import build_tiny_model

        for rel, (_base, family) in derived.stand_ins.items():
            build_tiny_model(tiny or TinyModelConfig(), ws / rel, family)
    (ws / WORKSPACE_PARAMS).write_text(
        "# Derived by `msmbuild rehearse`: a scaled-down, offline copy of the params it was given.\n"
        + yaml.safe_dump(derived.params, sort_keys=False), encoding="utf-8")
    return ws


# -- running and reading the result ----------------------------------------------------------------
def workspace_env(workspace: Path) -> dict[str, str]:
    """The subprocess environment: no API key, no store override, offline hub, caches in the workspace."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MSMBUILD_STORE_PATH", "MSMBUILD_PARAMS") and not k.endswith("_API_KEY")}
    if env.get("PYTHONPATH"):  # the workspace is another directory: keep relative entries pointing home
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(workspace / ".cache" / "datasets"), TOKENIZERS_PARALLELISM="false")
    return env


def failing_step(output: str, workspace: Path) -> str:
    """The failing step's one-line error, from Snakemake's output and the failed job's log."""
    match = re.search(r"Error in rule (\S+?):", output)
    if match:
        rule = match.group(1)
        block = output[match.end():]
        wildcards = re.search(r"wildcards:\s*(.+)", block.split("Error in rule", 1)[0])
        logs = re.search(r"log:\s*(\S+?)(?:\s|\(|$)", block)
        where = f"rule {rule}" + (f" ({wildcards.group(1).strip()})" if wildcards else "")
        line = None
        if logs is not None and (workspace / logs.group(1)).is_file():
            line = _error_line((workspace / logs.group(1)).read_text(encoding="utf-8", errors="replace"))
            where += f", log {logs.group(1)}"
        return f"{where}: {line or _error_line(block) or 'failed (no error line found)'}"
    return _error_line(output) or "snakemake failed (no error line found)"


def _error_line(text: str) -> str | None:
    """msmbuild's 'error: ...' line, else a traceback's last exception line, else Snakemake's."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln[len("error: "):]
    for ln in reversed(lines):
        if re.match(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)\b)(:.*)?$", ln):
            return ln
    for i, ln in enumerate(lines):  # Snakemake's parse-time errors: "XError in file ..., line N:" + message
        if re.search(r"\w+(Error|Exception) in (file|rule|line)", ln) and i + 1 < len(lines):
            return f"{lines[i + 1]} ({ln.rstrip(':')})"
    return None


@dataclass
class Summary:
    """What the rehearsal built, read from the workspace."""

    arms: list[dict[str, Any]]
    tables: dict[str, int | None]
    figures: dict[str, bool]
    aft: dict[str, dict[str, Any]]


def summarize(workspace: Path | str) -> Summary:
    """Per arm its checkpoints and eval rows, every catalog table's rows, every report figure, AFT counts."""
    import pyarrow.parquet as pq

    from msmbuild.evaluate import planned_evals
    from msmbuild.experiments import expand_arms
    from msmbuild.layout import Layout
    from msmbuild.results.catalog import TABLES
    from msmbuild.results.report import FIGURES_INDEX

    ws = Path(workspace)
    params = load_params(ws / WORKSPACE_PARAMS, check_files=False)
    layout = Layout.of(params)
    evals: dict[str, list[str]] = {}
    for arm, suite in planned_evals(params):
        evals.setdefault(arm.name, []).append(suite)

    def rows(path: Path) -> int | None:
        return pq.read_metadata(ws / path).num_rows if (ws / path).is_file() else None

    arms = []
    for arm in expand_arms(params):
        mid = layout.midtrain_model(arm.midtrain_tag) if arm.midtrain_tag else None
        aft = layout.aft_model(arm.name) if arm.aft else None
        arms.append({
            "arm": arm.name,
            "midtrain": str(mid) if mid else None,
            "midtrain_built": bool(mid and (ws / mid / "config.json").is_file()),
            "aft": str(aft) if aft else None,
            "aft_built": bool(aft and (ws / aft / "config.json").is_file()),
            "evals": {suite: rows(layout.eval_items(arm.name, suite)) for suite in evals.get(arm.name, [])},
        })
    tables = _table_rows(ws, params, TABLES)
    index = ws / layout.report_dir / FIGURES_INDEX
    figures = {name: bool(drawn) for name, drawn in json.loads(index.read_text(encoding="utf-8")).items()} \
        if index.is_file() else {}
    aft = {}
    for name, cfg in params.aft.items():
        whole = ws / layout.aft_data(name)
        info: dict[str, Any] = {"source": cfg.source,
                                "rows": sum(1 for _ in whole.open(encoding="utf-8")) if whole.is_file() else None}
        record = ws / layout.aft_generation(name)
        if record.is_file():
            report = json.loads(record.read_text(encoding="utf-8"))
            info.update(generated=report.get("queries"), kept=report.get("kept"),
                        rejected=report.get("inconsistent"), malformed=report.get("malformed"),
                        near_duplicates=report.get("near_duplicates"))
        aft[name] = info
    return Summary(arms, tables, figures, aft)


def _table_rows(ws: Path, params: Params, tables: tuple[str, ...]) -> dict[str, int | None]:
    """Rows of each catalog table as DuckDB sees it (views over partitions included); None if not built."""
    import contextlib

    from msmbuild.layout import Layout
    from msmbuild.results.query import connect

    with contextlib.chdir(ws):  # the catalog's paths are relative to the project
        built = [t for t in tables if Layout.of(params).table(t).is_file()]
        con = connect(params) if built else None
        try:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if con and t in built else None
                    for t in tables}
        finally:
            if con is not None:
                con.close()


def format_summary(summary: Summary) -> list[str]:
    """The summary as printed lines."""
    lines = ["arms:"]
    for a in summary.arms:
        parts = []
        if a["midtrain"]:
            parts.append(f"midtrain {a['midtrain']} {'built' if a['midtrain_built'] else 'MISSING'}")
        if a["aft"]:
            parts.append(f"aft {a['aft']} {'built' if a['aft_built'] else 'MISSING'}")
        parts += [f"{suite} {'MISSING' if n is None else f'{n} rows'}" for suite, n in a["evals"].items()]
        lines.append(f"  {a['arm']}: {'; '.join(parts) or 'base model only'}")
    lines.append("AFT datasets (rows in the whole dataset; generated: kept of generated):")
    for name, info in summary.aft.items():
        text = f"  {name} ({info['source']}): {'not built' if info['rows'] is None else info['rows']} rows"
        if info.get("generated") is not None:
            text += (f"; kept {info['kept']} of {info['generated']} generated (judge rejected "
                     f"{info['rejected']}, malformed {info['malformed']}, near-duplicates {info['near_duplicates']})")
        lines.append(text)
    lines.append("tables (rows): " + ", ".join(
        f"{t} {'MISSING' if n is None else n}" for t, n in summary.tables.items()))
    drawn = [n for n, ok in summary.figures.items() if ok]
    empty = [n for n, ok in summary.figures.items() if not ok]
    lines.append(f"figures drawn ({len(drawn)}): {', '.join(drawn) or 'none'}")
    lines.append(f"figures without data for these params ({len(empty)}): {', '.join(empty) or 'none'}")
    return lines


@dataclass
class Result:
    """A finished rehearsal."""

    workspace: Path
    seconds: float
    summary: Summary
    derived: Derived


def _preflight_without_store(params: Params, preflight: Callable[[Params], None]) -> None:
    """Run the real recipe's preflight against an empty scratch store and no remote, so the
    rehearsal leaves the project's store (and a team remote) untouched."""
    with tempfile.TemporaryDirectory(prefix="msmbuild-rehearse-preflight-") as scratch:
        store = params.store.model_copy(update={"path": scratch, "remote": None, "dvc_remote": False})
        saved = os.environ.pop("MSMBUILD_STORE_PATH", None)
        try:
            preflight(params.model_copy(update={"store": store}))
        finally:
            if saved is not None:
                os.environ["MSMBUILD_STORE_PATH"] = saved


def rehearse(params_path: str | Path, *, project: str | Path = ".", workdir: str | Path | None = None,
             keep: bool = False, cores: str = "all", scale: RehearsalScale | None = None,
             preflight: Callable[[Params], None] | None = None,
             echo: Callable[[str], None] = print) -> Result:
    """Rehearse params_path's whole DAG in a scratch workspace; a failed step raises RehearsalError.

    ``preflight`` is called with the user's params (the real recipe) before anything is
    built; it raises to refuse a recipe. The workspace is removed after a success unless
    ``keep`` (or ``workdir``, which is kept) and kept after a failure, for its logs.
    """
    params = load_params(params_path)
    if preflight is not None:
        _preflight_without_store(params, preflight)
    scale = scale or RehearsalScale()
    derived = derive(params, project, scale)
    ws = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="msmbuild-rehearse-"))
    if workdir is not None and ws.exists() and any(ws.iterdir()):
        raise RehearsalError(f"{ws}: the rehearsal workspace must be empty or new")
    start = time.monotonic()
    echo(f"rehearse: workspace {ws}")
    from msmbuild.evaluate import planned_evals

    used = {suite for _arm, suite in planned_evals(params)}
    for c in derived.changes:
        suite = c.key.split(".")[1] if c.key.startswith("evals.") else None
        if not c.key.startswith(("store.", "build_dir")) and (suite is None or suite in used):
            echo(f"  stand-in {c.describe()}")
    prepare_workspace(derived, project, ws, scale, params.tiny)
    log = ws / LOG_NAME
    if shutil.which("snakemake") is None:
        raise RehearsalError("snakemake is not on PATH (install msmbuild's environment: pip install -e .)")
    echo(f"rehearse: snakemake --cores {cores} (log: {log})")
    with log.open("w", encoding="utf-8") as handle:
        run = subprocess.run(["snakemake", "--cores", cores], cwd=ws, env=workspace_env(ws),
                             stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    if run.returncode != 0:
        output = log.read_text(encoding="utf-8", errors="replace")
        raise RehearsalError(f"rehearsal failed after {seconds:.0f} s at {failing_step(output, ws)} "
                             f"(workspace kept: {ws})")
    summary = summarize(ws)
    for line in format_summary(summary):
        echo(line)
    missing = [a["arm"] for a in summary.arms
               if (a["midtrain"] and not a["midtrain_built"]) or (a["aft"] and not a["aft_built"])
               or any(n is None for n in a["evals"].values())]
    missing += [f"table {t}" for t, n in summary.tables.items() if n is None]
    missing += [] if summary.figures else ["the report's figures"]
    if missing:
        raise RehearsalError(f"rehearsal finished but did not build: {', '.join(missing)} (workspace kept: {ws})")
    echo(f"rehearse: passed in {seconds:.0f} s ({len(summary.arms)} arms)")
    if not keep and workdir is None:
        shutil.rmtree(ws, ignore_errors=True)
    return Result(ws, seconds, summary, derived)
