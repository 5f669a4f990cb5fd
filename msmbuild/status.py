"""What is stale and why: ``msmbuild status`` and ``msmbuild explain``.

Two sources, each the authority on its own level:
- section level: the sections recorded in ``build/corpora/<corpus>/sections.json`` at the
  last build, compared with the spec on disk now ("section #x of specs/y.md changed");
- artifact level: the workflow engine's own view — ``snakemake --summary`` (status and plan
  per output file) and, in a DVC repository, ``dvc status --json`` (changed deps per stage).
"""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msmbuild.config import Params, params_value
from msmbuild.errors import MsmbuildError
from msmbuild.experiments import Arm, expand_arms
from msmbuild.layout import Layout


@dataclass
class SectionChange:
    """One section that differs between the last build and the spec on disk."""

    corpus: str
    spec: str
    section_id: str
    change: str  # "changed", "added", "removed", "preamble changed"
    line: int | None = None

    def describe(self) -> str:
        """A one-line human description."""
        where = f" (line {self.line})" if self.line else ""
        if self.change == "preamble changed":
            return f"preamble of {self.spec} changed (it is in every document's context)"
        return f"section #{self.section_id} of {self.spec} {self.change}{where}"


@dataclass
class OutputStatus:
    """One output file as the workflow engine sees it."""

    path: str
    rule: str
    status: str
    plan: str
    # for a stale output: "recompute" (its action's inputs change: model calls, training,
    # evals run and may cost) or "lookup" (it reruns, but what it is made from keeps its
    # content, so every action is a store hit); see classify_work
    work: str = "recompute"

    @property
    def stale(self) -> bool:
        """True when the engine would rebuild it, or it is gone (see ``deleted``)."""
        return self.plan != "no update" or self.deleted

    @property
    def deleted(self) -> bool:
        """Missing although the engine plans nothing: deleted after the outputs made from
        it were built (Snakemake does not remake such a file by itself, and the next step
        that reads it fails)."""
        return self.status == "missing" and self.plan == "no update"

    def describe(self) -> str:
        """One line in words: whether it will be rebuilt, and the engine's reason."""
        if self.deleted:
            return (f"{self.path}: missing (deleted after what is made from it); Snakemake will not remake "
                    f"it by itself: run `snakemake --cores all --forcerun {self.rule}`")
        if not self.stale:
            return f"{self.path}: up to date"
        reason = {"ok": "an input it is made from will be rebuilt first",
                  "missing": "not built yet",
                  "params changed": "its settings in params.yaml changed",
                  "updated input files": "an input file changed",
                  }.get(self.status, self.status)
        if self.work == "lookup":
            return (f"{self.path}: reruns as store lookups only ({reason}, but nothing it is made "
                    "from changes content: nothing is recomputed or paid for)")
        return f"{self.path}: will be rebuilt ({reason})"


@dataclass
class StatusReport:
    """Everything ``msmbuild status`` prints."""

    sections: list[SectionChange] = field(default_factory=list)
    outputs: list[OutputStatus] = field(default_factory=list)
    dvc: dict[str, list[str]] = field(default_factory=dict)
    unbuilt_corpora: list[str] = field(default_factory=list)
    # corpus -> (documents made against an older spec revision, all documents); these are
    # valid by the full_incremental policy, so they do not make the build stale
    older_spec_documents: dict[str, tuple[int, int]] = field(default_factory=dict)
    # corpus -> (documents made by an older prompt version, all documents): kept and used
    # after an upgrade of the prompts, so they do not make the build stale either
    older_prompt_documents: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def up_to_date(self) -> bool:
        """True when nothing would be rebuilt."""
        return not (self.sections or self.unbuilt_corpora or self.dvc
                    or any(o.stale for o in self.outputs))


def section_changes(params: Params, corpus: str) -> list[SectionChange] | None:
    """Sections of the corpus's spec that changed since its last build (None: never built)."""
    from msmbuild.spec import parse_spec

    cfg = params.corpora[corpus]
    recorded_path = Layout.of(params).sections(corpus)
    if not recorded_path.is_file():
        return None
    recorded = json.loads(recorded_path.read_text(encoding="utf-8"))
    current = parse_spec(cfg.spec, cfg.spec_variables())
    old = {s["id"]: s["hash"] for s in recorded["sections"]}
    changes = []
    if recorded.get("preamble") != current.preamble:
        changes.append(SectionChange(corpus, cfg.spec, "", "preamble changed"))
    for s in current.sections:
        if s.id not in old:
            changes.append(SectionChange(corpus, cfg.spec, s.id, "added", s.line))
        elif old[s.id] != s.hash:
            changes.append(SectionChange(corpus, cfg.spec, s.id, "changed", s.line))
    ids = {s.id for s in current.sections}
    changes.extend(SectionChange(corpus, cfg.spec, sid, "removed") for sid in old if sid not in ids)
    return changes


def snakemake_summary(workdir: str | Path = ".") -> list[OutputStatus]:
    """``snakemake --summary`` parsed: one row per output file."""
    proc = subprocess.run(["snakemake", "--summary", "--cores", "1"], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise MsmbuildError(f"snakemake --summary failed in {workdir}: {last}")
    rows = []
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or parts[0] == "output_file":
            continue
        rows.append(OutputStatus(path=parts[0], rule=parts[2], status=parts[4], plan=parts[5]))
    return rows


def dvc_status(workdir: str | Path = ".") -> dict[str, list[str]]:
    """``dvc status --json`` as stage -> reasons; empty when not a DVC repository."""
    if not (Path(workdir) / ".dvc").is_dir() or not (Path(workdir) / "dvc.yaml").is_file():
        return {}
    proc = subprocess.run(["dvc", "status", "--json"], cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MsmbuildError(f"dvc status failed: {proc.stderr.strip()}")
    raw = json.loads(proc.stdout or "{}")
    out: dict[str, list[str]] = {}
    for stage, entries in raw.items():
        reasons = []
        for entry in entries:
            if isinstance(entry, str):
                reasons.append(entry)
                continue
            for what, items in entry.items():
                if isinstance(items, dict):
                    reasons.extend(f"{what}: {path} {state}" for path, state in items.items())
                else:
                    reasons.append(f"{what}: {items}")
        out[stage] = reasons
    return out


_PIPELINE = {"corpus": 0, "shards": 1, None: 2, "midtrain": 3, "aft": 4, "eval": 5, "results": 6}


def classify_work(params: Params, outputs: list[OutputStatus], changed_corpora: set[str]) -> None:
    """Mark each stale output "recompute" or "lookup" (OutputStatus.work).

    An output the engine reruns for a reason of its own (not built, settings or an input
    file changed) recomputes; so does one made from a corpus whose spec sections changed,
    or downstream of a recomputed output (a corpus's shards, an arm's checkpoints and evals).
    The rest rerun only because an upstream job runs: every action they look up has
    unchanged inputs (the upstream rewrites the same bytes), so they are store hits. The
    catalog and report are always local derivations (no model call, no training).
    """
    layout = Layout.of(params)
    arms = expand_arms(params)
    corpora, tags, arm_names = set(changed_corpora), set(), set()
    everything = False  # the base model or an unplaced input: everything downstream recomputes
    rows = sorted((o for o in outputs if o.stale), key=lambda o: _PIPELINE.get(
        (layout.owner(o.path) or (None, None))[0], 2))
    for o in rows:
        kind, name = layout.owner(o.path) or (None, None)
        if kind == "results":
            o.work = "lookup"
            continue
        own = o.status != "ok"
        if kind in ("corpus", "shards"):
            touched = own or everything or name in corpora
            if touched:
                corpora.add(name)
        elif kind == "midtrain":
            feeding = {a.midtrain for a in arms if a.midtrain_tag == name}
            touched = own or everything or bool(feeding & corpora)
            if touched:
                tags.add(name)
        elif kind in ("aft", "eval"):
            arm = next((a for a in arms if a.name == name), None)
            touched = own or everything or arm is None or name in arm_names \
                or (arm.midtrain is not None and (arm.midtrain in corpora or arm.midtrain_tag in tags))
            if touched:
                arm_names.add(name)
        else:  # the base model, AFT data and the audit (which reads every corpus and AFT file)
            touched = own or everything or (o.rule == "audit" and bool(corpora))
            if own and o.rule in ("base_model",):
                everything = True
            if own and o.rule.startswith("aft_data"):
                arm_names.update(a.name for a in arms if a.aft)
        o.work = "recompute" if touched else "lookup"


def status(params: Params, workdir: str | Path = ".", engine: str = "snakemake") -> StatusReport:
    """Section-level changes per corpus plus the engine's stale outputs."""
    report = StatusReport()
    for corpus in params.corpora:
        changes = section_changes(params, corpus)
        if changes is None:
            report.unbuilt_corpora.append(corpus)
        else:
            report.sections.extend(changes)
        if params.corpora[corpus].context == "full_incremental":
            from msmbuild.generate.corpus import stale_documents

            counts = stale_documents(params, corpus)
            if counts is not None and counts[0]:
                report.older_spec_documents[corpus] = counts
        from msmbuild.generate.corpus import older_prompt_documents

        counts = older_prompt_documents(params, corpus)
        if counts is not None and counts[0]:
            report.older_prompt_documents[corpus] = counts
    if engine in ("snakemake", "both") and (Path(workdir) / "Snakefile").is_file():
        report.outputs = snakemake_summary(workdir)
        classify_work(params, report.outputs,
                      {c.corpus for c in report.sections} | set(report.unbuilt_corpora))
    if engine in ("dvc", "both"):
        report.dvc = dvc_status(workdir)
    return report


def corpora_feeding(params: Params, artifact: str) -> list[str]:
    """The corpora an artifact under build/ is derived from, by its place in the layout."""
    owner = Layout.of(params).owner(artifact)
    if owner is None:
        return []
    kind, name = owner
    if kind in ("corpus", "shards"):
        return [name] if name in params.corpora else []
    arms: list[Arm] = expand_arms(params)
    if kind == "midtrain":
        return sorted({a.midtrain for a in arms if a.midtrain_tag == name and a.midtrain})
    if kind in ("aft", "eval"):
        return sorted({a.midtrain for a in arms if a.name == name and a.midtrain})
    return sorted({a.midtrain for a in arms if a.midtrain})


def recorded_settings(workdir: str | Path, output: str) -> dict[str, Any] | None:
    """The settings JSON Snakemake recorded for output's last run (rules' ``params.settings``)."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    meta = Path(workdir, ".snakemake", "metadata", name)
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8")).get("params") or []
    except (OSError, ValueError):
        return None
    for value in recorded:
        try:
            decoded = json.loads(ast.literal_eval(value))
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(decoded, dict):
            return decoded
    return None


def _artifact_params(params: Params, artifact: str) -> Params:
    """The params an artifact was built under: its arm's, sweep overrides applied, else params."""
    parts = Path(artifact).parts
    build = Path(params.build_dir).parts
    rel = parts[len(build):] if parts[: len(build)] == build else parts
    for arm in expand_arms(params):
        if (rel[:3] == ("models", "aft", arm.name) or rel[:2] == ("evals", arm.name)
                or rel[:3] == ("models", "midtrain", arm.midtrain_tag)):
            return arm.params(params)
    return params


def _leaf_diff(old: Any, new: Any, key: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for k in sorted(set(old) | set(new))
                for line in _leaf_diff(old.get(k, "(absent)"), new.get(k, "(absent)"), f"{key}.{k}")]
    return [] if old == new else [f"{key}: {json.dumps(old)} -> {json.dumps(new)}"]


def changed_settings(params: Params, artifact: str, workdir: str | Path = ".") -> list[str]:
    """The params.yaml keys whose value differs from what artifact was last built with."""
    recorded = recorded_settings(workdir, artifact)
    if recorded is None:
        return []
    now = _artifact_params(params, artifact)
    changes: list[str] = []
    for key, old in sorted(recorded.items()):
        try:
            new = params_value(now, key)
        except KeyError:
            continue  # a derived value (base model name, judge), not a params.yaml key
        changes.extend(_leaf_diff(old, new, key))
    return changes


def _workflow_relative(artifact: str, workdir: str | Path) -> str:
    """The artifact's path as the workflow names it: relative to workdir, normalized."""
    path = Path(os.path.normpath(artifact))
    if path.is_absolute():
        root = Path(workdir).resolve()
        try:
            path = path.resolve().relative_to(root)
        except ValueError:
            raise MsmbuildError(f"{artifact}: outside the workflow directory {root}") from None
    return path.as_posix()


def explain(params: Params, artifact: str, workdir: str | Path = ".") -> list[str]:
    """Lines saying whether artifact is up to date and, if not, which input changed."""
    lines = []
    artifact = _workflow_relative(artifact, workdir)
    has_snakefile = (Path(workdir) / "Snakefile").is_file()
    summary = snakemake_summary(workdir) if has_snakefile else []
    if any(o.stale for o in summary):  # recompute or lookup: decided over the whole workflow
        changed = {corpus for corpus in params.corpora if section_changes(params, corpus) != []}
        classify_work(params, summary, changed)
    rows = [o for o in summary if o.path == artifact or o.path.startswith(artifact + "/")]
    if not rows:
        if not Path(workdir, artifact).exists():
            raise MsmbuildError(f"{artifact}: not an output of this workflow (no such file, "
                                "and no rule writes it)")
        if has_snakefile:
            raise MsmbuildError(f"{artifact}: exists, but no rule of the workflow writes it")
    stale = [o for o in rows if o.stale]
    if rows and not stale:
        lines.append(f"{artifact}: up to date")
    for o in stale:
        lines.append(f"{o.describe()} [rule {o.rule}]")
        if o.status == "params changed":
            lines.extend(f"  because params.yaml changed: {c}" for c in changed_settings(params, o.path, workdir))
    for corpus in corpora_feeding(params, artifact):
        changes = section_changes(params, corpus)
        if changes is None:
            lines.append(f"  corpus {corpus} has not been built yet")
            continue
        for change in changes:
            lines.append(f"  because {change.describe()}")
    return lines
