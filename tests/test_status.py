"""`msmbuild status` and `msmbuild explain` on a real, snakemake-built workspace."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from msmbuild.config import validate_params
from msmbuild.spec import parse_spec
from msmbuild.status import SectionChange, corpora_feeding

REPO = Path(__file__).resolve().parents[1]
SPEC = "specs/pro_america.md"
DOCS = "build/corpora/small/documents.json"
CORPUS = {"spec": SPEC, "backend": "offline", "n_assertions": 1, "n_doc_types": 1,
          "n_doc_ideas": 1}

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def must(cmd: list[str], cwd: Path) -> str:
    proc = run(cmd, cwd)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def make_workspace(root: Path) -> Path:
    """The repo's workflow files, one spec, one small offline corpus, no experiments."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    for name in ("rules", "aft", "evals"):
        shutil.copytree(REPO / name, root / name)
    (root / "specs").mkdir()
    shutil.copy(REPO / SPEC, root / SPEC)
    (root / "params.yaml").write_text(yaml.safe_dump({"corpora": {"small": CORPUS}}))
    (root / ".gitignore").write_text("/build/\n/.msmbuild/\n/logs/\n")
    must(["git", "init", "-q"], root)
    must(["dvc", "init", "-q"], root)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("status") / "ws")
    must(["snakemake", "--cores", "2", "-q"], ws)
    assert (ws / DOCS).is_file()
    return ws


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built workspace (timestamps kept), free to edit."""
    return Path(shutil.copytree(built, tmp_path / "ws", symlinks=True))


def edit_first_section(ws: Path) -> tuple[str, int]:
    """Change one body line of the first section with text; return (id, heading line)."""
    path = ws / SPEC
    section = next(s for s in parse_spec(str(path)).sections if s.text.strip())
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    body = next(i for i in range(section.line, len(lines)) if lines[i].strip())
    lines[body] = lines[body].rstrip("\n") + " It says so when asked.\n"
    path.write_text("".join(lines), encoding="utf-8")
    return section.id, section.line


def test_unbuilt_corpus_is_reported(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    proc = run(["msmbuild", "status"], ws)
    assert proc.returncode == 1, proc.stderr
    assert "corpus small: not built yet" in proc.stdout
    assert "up to date" not in proc.stdout


def test_fresh_build_is_up_to_date(ws: Path) -> None:
    proc = run(["msmbuild", "status"], ws)
    assert (proc.returncode, proc.stdout.strip()) == (0, "up to date"), proc.stderr
    assert must(["msmbuild", "explain", DOCS], ws).strip() == f"{DOCS}: up to date"


def test_edited_section_is_named_with_its_stale_outputs(ws: Path) -> None:
    section_id, line = edit_first_section(ws)
    proc = run(["msmbuild", "status"], ws)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    named = f"section #{section_id} of {SPEC} changed (line {line})"
    assert [x for x in out if x.startswith("section #")] == [named]
    stale = {x.split(":")[0] for x in out if x.startswith("build/")}
    assert {DOCS, "build/corpora/small/tree.json", "build/corpora/small/sections.json"} <= stale
    assert "up to date" not in proc.stdout

    explained = must(["msmbuild", "explain", DOCS], ws).splitlines()
    assert explained[0].startswith(f"{DOCS}: ")
    assert "rule corpus_documents" in explained[0]
    assert f"  because {named}" in explained


def test_added_section_is_reported(ws: Path) -> None:
    spec = ws / SPEC
    text = spec.read_text(encoding="utf-8").rstrip("\n")
    heading_line = len(text.splitlines()) + 2
    spec.write_text(text + "\n\n## Local repairs {#local-repairs}\n\n"
                    "The assistant prefers a repair shop in town to shipping a thing abroad.\n",
                    encoding="utf-8")
    proc = run(["msmbuild", "status"], ws)
    assert proc.returncode == 1, proc.stderr
    assert f"section #local-repairs of {SPEC} added (line {heading_line})" in proc.stdout
    assert "changed (line" not in proc.stdout
    assert f"because section #local-repairs of {SPEC} added" in must(
        ["msmbuild", "explain", DOCS], ws)


def test_dvc_engine_names_the_changed_spec(ws: Path) -> None:
    edit_first_section(ws)
    proc = run(["msmbuild", "status", "--engine", "dvc"], ws)
    assert proc.returncode == 1, proc.stderr
    assert any(x.startswith("dvc stage corpus_tree@small:") and f"{SPEC} modified" in x
               for x in proc.stdout.splitlines()), proc.stdout


@pytest.mark.parametrize(("artifact", "message"), [
    ("build/corpora/small/nope.parquet", "not an output of this workflow"),
    ("build/refs/corpus-small-tree.json", "exists, but no rule of the workflow writes it"),
    ("/etc/hostname", "outside the workflow directory"),
])
def test_bad_artifact_exits_2_with_one_line(built: Path, artifact: str, message: str) -> None:
    proc = run(["msmbuild", "explain", artifact], built)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert proc.stderr.startswith(f"error: {artifact}: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_explain_accepts_dot_slash_and_directories(built: Path) -> None:
    assert must(["msmbuild", "explain", f"./{DOCS}"], built).strip() == f"{DOCS}: up to date"
    assert must(["msmbuild", "explain", "build/corpora/small/"], built).strip() == \
        "build/corpora/small: up to date"


def test_corpora_feeding_follows_the_build_layout() -> None:
    params = validate_params({
        "corpora": {"a": {"spec": "a.md"}, "b": {"spec": "b.md"}},
        "aft": {"cheese": {"path": "aft/cheese.jsonl"}},
        "experiments": {"msm_a": {"midtrain": "a", "aft": "cheese"}, "aft_only": {"aft": "cheese"}},
    })
    assert corpora_feeding(params, "build/corpora/b/documents.json") == ["b"]
    assert corpora_feeding(params, "build/shards/a") == ["a"]
    assert corpora_feeding(params, "build/models/aft/msm_a") == ["a"]
    assert corpora_feeding(params, "build/models/aft/aft_only") == []
    assert corpora_feeding(params, "build/results/documents.parquet") == ["a"]


def test_section_change_descriptions() -> None:
    assert SectionChange("c", "specs/x.md", "why", "changed", 7).describe() == \
        "section #why of specs/x.md changed (line 7)"
    assert SectionChange("c", "specs/x.md", "old", "removed").describe() == \
        "section #old of specs/x.md removed"
    assert SectionChange("c", "specs/x.md", "", "preamble changed").describe().startswith(
        "preamble of specs/x.md changed")


def test_explain_names_the_changed_params_key(ws: Path) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["corpora"]["small"]["n_doc_ideas"] = 2
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    explained = must(["msmbuild", "explain", DOCS], ws).splitlines()
    assert explained[0] == f"{DOCS}: will be rebuilt (its settings in params.yaml changed) [rule corpus_documents]"
    assert explained[1:] == ["  because params.yaml changed: corpora.small.n_doc_ideas: 1 -> 2"]


def test_status_lines_read_as_sentences(ws: Path) -> None:
    edit_first_section(ws)
    out = run(["msmbuild", "status"], ws).stdout
    assert "update pending" not in out and "(ok)" not in out
    assert f"{DOCS}: will be rebuilt (an input it is made from will be rebuilt first)" in out
    assert "build/corpora/small/tree.json: will be rebuilt (an input file changed)" in out


@pytest.mark.faults
def test_status_names_a_deleted_ideas_index(ws: Path) -> None:
    """A deleted ideas.json: Snakemake plans nothing (documents.json is newer) and the next
    documents step would fail; status says so and how to remake it."""
    (ws / "build" / "corpora" / "small" / "ideas.json").unlink()
    proc = run(["msmbuild", "status"], ws)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "build/corpora/small/ideas.json: missing (deleted after what is made from it)" in proc.stdout
    must(["snakemake", "--cores", "2", "-q", "--forcerun", "corpus_ideas"], ws)
    assert must(["msmbuild", "status"], ws).strip() == "up to date"
