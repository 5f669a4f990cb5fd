"""The project's default DVC remote, as a URL the store's remote tier can use.

With only a DVC remote configured (``dvc remote add -d team s3://…``), msmbuild keeps its
store remote in ``<that remote>/msmbuild-store``: what a build computes is written
through there, so a teammate's ``dvc pull`` + ``snakemake`` finds every model call,
training run and eval as a store hit instead of paying for it again.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import sys
import time
from pathlib import Path, PurePosixPath

STORE_PREFIX = "msmbuild-store"
# Written after a Snakemake build's outputs are recorded in dvc.lock; its mtime is when the
# recording began (outputs made later are not in it).
RECORDED_MARKER = Path(".snakemake") / "msmbuild-dvc-recorded"


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    if path.is_file():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error:
            pass
    return parser


def default_remote_url(root: str | os.PathLike[str] = ".") -> str | None:
    """URL of the DVC project's default remote (.dvc/config, then config.local), or None."""
    dvc_dir = Path(root) / ".dvc"
    if not dvc_dir.is_dir():
        return None
    name, url = None, {}
    for cfg_file in (dvc_dir / "config", dvc_dir / "config.local"):
        parser = _read(cfg_file)
        name = parser.get("core", "remote", fallback=name)
        for section in parser.sections():
            title = section.strip("'")  # DVC writes ['remote "name"']
            if title.startswith('remote "') and title.endswith('"') and parser.has_option(section, "url"):
                url[title[len('remote "'):-1]] = parser.get(section, "url")
    if not name or name not in url:
        return None
    remote = url[name]
    if "://" not in remote and not os.path.isabs(remote):
        remote = os.path.normpath(dvc_dir.resolve() / remote)  # DVC reads relative paths from .dvc/
    return remote


def store_remote_url(root: str | os.PathLike[str] = ".") -> str | None:
    """``<default DVC remote>/msmbuild-store``, or None without a DVC remote."""
    url = default_remote_url(root)
    return None if url is None else f"{url.rstrip('/')}/{STORE_PREFIX}"


def record_outputs_for_dvc(root: str | os.PathLike[str] = ".", build_dir: str = "build",
                           announce: bool = False) -> list[str]:
    """After a Snakemake build, record its outputs in dvc.lock (``dvc commit``).

    Only ``dvc repro`` writes dvc.lock, and ``dvc push`` pushes what dvc.lock names; this
    makes ``dvc push`` after ``snakemake`` push what was built. Only the stages Snakemake
    ran a job of are recorded (``stages_built``): a stage downstream of them that this
    build did not run (``snakemake <one target>``) keeps its old record, so ``dvc status``
    says it is stale instead of recording it as made from inputs it never saw. Where that
    cannot be told (a stage with no record yet, no Snakemake metadata) every stage is
    recorded, and a stage directory the build had nothing for (``build/evals`` without
    evals, ``build/aft`` without AFT data) is recorded as the empty directory it is, so
    that a teammate's plain ``dvc pull`` finds every stage recorded. Returns the stages
    that still could not be recorded. With announce, one line on stderr says the
    recording starts (it hashes the recorded stages' outputs and inputs, which can take a
    minute or more with no other output).
    """
    import shutil
    import subprocess

    root = Path(root)
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file() or shutil.which("dvc") is None:
        return []
    if not built_since_recorded(root):
        return []

    def dvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)

    # Snakemake reschedules a job whose inputs are newer than its outputs, so the outputs
    # must keep their times: `--no-relink` keeps DVC from replacing them with copies of
    # what it just cached (new mtimes, new inodes), and any time DVC still changes is put back.
    if announce:
        print("msmbuild: recording this build's outputs in dvc.lock for `dvc push` (dvc commit; "
              "this hashes the outputs of the stages it ran and can take a minute or more)",
              file=sys.stderr, flush=True)
    started = time.time_ns()
    # the times the stage names are listed against: read before listing, so that an edit
    # made while this recording runs is seen by the next one
    inputs = {name: _mtime(root / name) for name in ("dvc.yaml", "params.yaml")}
    listed: list[str] = []
    stages = stages_built(root, listed)
    times = _times(root / build_dir)
    try:
        if stages is None:
            failing = _commit_all(dvc, root, build_dir)
        elif stages:
            failing = [] if dvc("commit", "--force", "--no-relink", "--quiet", *stages).returncode == 0 \
                else _commit_all(dvc, root, build_dir)
        else:
            failing = []
    finally:
        _restore_times(times)
    if not failing:
        marker = root / RECORDED_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({**inputs, "stages": listed}) + "\n")
        os.utime(marker, ns=(started, started))
    return failing


def built_since_recorded(root: str | os.PathLike[str] = ".") -> bool:
    """Whether Snakemake made an output, or dvc.yaml changed, since the last recording.

    Snakemake writes a metadata file per output of every job it runs
    (``.snakemake/metadata/``); a build that ran no job writes none, so the ``dvc commit``
    over every stage (O(files under build/)) is skipped. A dvc.lock that DVC rewrote
    (``dvc repro``) needs nothing from Snakemake; a missing one, or no recording yet: True.
    """
    root = Path(root)
    marker = root / RECORDED_MARKER
    try:
        recorded = marker.stat().st_mtime_ns
        dvc_yaml = json.loads(marker.read_text())["dvc.yaml"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    if not (root / "dvc.lock").is_file() or dvc_yaml != _mtime(root / "dvc.yaml"):
        return True
    try:
        with os.scandir(root / ".snakemake" / "metadata") as entries:
            return any(entry.stat(follow_symlinks=False).st_mtime_ns > recorded for entry in entries)
    except OSError:
        return False


def stages_built(root: str | os.PathLike[str] = ".", listed: list[str] | None = None) -> list[str] | None:
    """The DVC stages with an output that Snakemake wrote since the last recording, or None
    when that cannot be told (no recording yet, a dvc.yaml stage with no dvc.lock record,
    unreadable Snakemake metadata, outputs that no stage owns): then the caller records
    every stage.

    The stage names are ``dvc stage list``'s, or, while dvc.yaml and params.yaml (which
    its ``foreach`` stages expand over) are unchanged since the last recording, the names
    that recording listed (one DVC start-up less per build); ``listed`` receives them.

    Snakemake keeps one metadata file per output of each job it runs, under
    ``.snakemake/metadata/``, named by the output's path in URL-safe base64 (split into
    ``@``-prefixed directories when longer than a file name may be). An output belongs to
    the stage whose dvc.lock ``outs`` path is it or a directory above it.
    """
    import subprocess

    import yaml

    root = Path(root)
    try:
        recorded = (root / RECORDED_MARKER).stat().st_mtime_ns
        marker = json.loads((root / RECORDED_MARKER).read_text(encoding="utf-8"))
        lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
        outs = {name: [PurePosixPath(o["path"]) for o in stage.get("outs", [])]
                for name, stage in lock["stages"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return None
    names = marker.get("stages") if isinstance(marker, dict) else None
    if not (isinstance(names, list) and names and marker.get("dvc.yaml") == _mtime(root / "dvc.yaml")
            and marker.get("params.yaml") == _mtime(root / "params.yaml")):
        proc = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        names = proc.stdout.split()
    if listed is not None:
        listed[:] = names
    if not set(names) <= set(outs):
        return None
    written = _snakemake_outputs_since(root / ".snakemake" / "metadata", recorded)
    if written is None:
        return None
    built = set()
    for path in written:
        for name, paths in outs.items():
            if any(path == out or out in path.parents for out in paths):
                built.add(name)
    if written and not built:
        return None  # outputs no stage owns: not what this workflow writes, so record every stage
    return sorted(built)


def _snakemake_outputs_since(metadata: Path, since_ns: int) -> list[PurePosixPath] | None:
    """The output paths whose Snakemake metadata file is newer than since_ns; None when a
    name does not decode."""
    import base64
    import binascii

    found = []
    for dirpath, _dirnames, filenames in os.walk(metadata):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if os.stat(path).st_mtime_ns <= since_ns:
                    continue
                parts = [p.removeprefix("@") for p in Path(os.path.relpath(path, metadata)).parts]
                found.append(PurePosixPath(base64.urlsafe_b64decode("".join(parts)).decode()))
            except (OSError, ValueError, binascii.Error):
                return None
    return found


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _times(top: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, atime, mtime) of every file and directory under top."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            out[path] = (st.st_ino, st.st_atime_ns, st.st_mtime_ns)
    return out


def _restore_times(times: dict[str, tuple[int, int, int]]) -> None:
    for path, (ino, atime, mtime) in sorted(times.items(), key=lambda kv: -kv[0].count(os.sep)):
        try:
            st = os.stat(path, follow_symlinks=False)
            if st.st_ino == ino and st.st_mtime_ns != mtime:
                os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        except OSError:
            continue


def _commit_all(dvc, root: Path, build_dir: str) -> list[str]:
    if dvc("commit", "--force", "--no-relink", "--quiet").returncode == 0:
        return []
    listed = dvc("stage", "list", "--name-only")
    failing = listed.stdout.split() if listed.returncode == 0 else []
    while failing:
        still, made = [], False
        for stage in failing:
            proc = dvc("commit", "--force", "--no-relink", stage)
            if proc.returncode == 0:
                continue
            still.append(stage)
            missing = re.search(r"(?:output|dependency) '([^']+)' does not exist", proc.stderr + proc.stdout)
            rel = Path(missing.group(1)) if missing else None
            if rel is not None and not rel.is_absolute() and not rel.suffix and rel.parts[:1] == (build_dir,):
                (root / rel).mkdir(parents=True, exist_ok=True)  # a stage directory with nothing in it
                made = True
        if not made:
            return still
        failing = still
    return []
