"""Fault suite, training side: a full disk during training (a real small tmpfs), a torn
resume log, and checkpoint identity that does not depend on speed or resume points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from train_helpers import synthetic_docs, tiny_params, train_aft, write_docs

from msmbuild.data.shards import build_shards
from msmbuild.experiments import arm_by_name
from msmbuild.layout import TRAIN_LOG, Layout
from msmbuild.models import prepare_base_model
from msmbuild.store import Store
from msmbuild.train.midtrain import run_midtrain

pytestmark = pytest.mark.faults


def _demos(path: Path, n: int = 4) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Which cheese {i}?"},
                          {"role": "assistant", "content": f"The mild one, {i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _setup(root: Path, store_dir: Path | None = None):
    root.mkdir(parents=True, exist_ok=True)
    p = tiny_params(root / "build", store_dir or root / "store",
                    aft={"demo": {"path": _demos(root / "demo.jsonl").as_posix()}},
                    experiments={"mc": {"midtrain": "c", "aft": "demo"}})
    write_docs(root / "build", "c", synthetic_docs())
    for corpus in p.corpora.values():  # the CLI checks that every spec params.yaml names exists
        (root / corpus.spec).write_text("# Spec\n\nThe assistant is honest.\n", encoding="utf-8")
    store = Store(p.store.path)
    build_shards(p, "c", store)
    return p, store, arm_by_name(p, "mc")


def _crash_at(n: int):
    def on_step(step: int) -> None:
        if step == n:
            raise KeyboardInterrupt("simulated kill")
    return on_step


def test_a_torn_resume_log_line_is_ignored_not_fatal(tmp_path):
    p, store, arm = _setup(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_midtrain(p, arm, store, on_step=_crash_at(3))
    key = next(store.root.glob("resume/*")).name
    log = store.resume_dir(key) / TRAIN_LOG
    with open(log, "a") as f:
        f.write('{"step": 3, "loss": 4.1, "l')  # a write cut off by a crash or a full disk
    result = run_midtrain(p, arm, store)
    assert result.meta["resumed_from"] == 2
    rows = [json.loads(x) for x in (Layout.of(p).arm_midtrain(arm) / TRAIN_LOG).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_retrain_and_resume_keep_the_checkpoint_digest_and_downstream_keys(tmp_path, monkeypatch):
    """Run facts (speed, resume point) stay out of the checkpoint: a retrain and a resumed
    run with the same weights give the same tree digest, so AFT and eval keys do not move.
    The two workspaces are projects as params.yaml describes them (build/ and the store
    relative to the project root), so a LoRA adapter names its base the same way in both."""
    for name in "ab":
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    p, store, arm = _setup(Path("."))
    straight = run_midtrain(p, arm, store)
    aft_straight = train_aft(p, arm, store)
    # retrain the same action (different speed: it is a new run); the placed checkpoint goes
    # too, else it verifies against its lineage.json and is adopted instead of retrained
    store.actions.remove(straight.key)
    shutil.rmtree(Layout.of(p).arm_midtrain(arm))
    retrained = run_midtrain(p, arm, store)
    assert not retrained.hit and retrained.meta["tokens_per_s"] != straight.meta["tokens_per_s"]
    assert retrained.value == straight.value
    # a run killed at step 3 and resumed from its step-2 state, in another store
    monkeypatch.chdir(tmp_path / "b")
    q, other, arm_b = _setup(Path("."))
    with pytest.raises(KeyboardInterrupt):
        run_midtrain(q, arm_b, other, on_step=_crash_at(3))
    resumed = run_midtrain(q, arm_b, other)
    assert resumed.meta["resumed_from"] == 2
    assert resumed.key == straight.key and resumed.value == straight.value
    aft_resumed = train_aft(q, arm_b, other)
    assert aft_resumed.key == aft_straight.key and aft_resumed.value == aft_straight.value
    log = (Layout.of(q).arm_midtrain(arm_b) / TRAIN_LOG).read_text()
    assert "tokens_per_s" not in log and "resumed_from" not in log


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MiB tmpfs (needs root or CAP_SYS_ADMIN); skipped, with the reason, elsewhere."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or proc.returncode}); "
                    "the disk-full test needs root or CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill disk until ENOSPC, then give back `leave` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def test_disk_full_during_training_is_one_clear_line_and_the_rerun_resumes(small_disk, tmp_path,
                                                                           monkeypatch, capsys):
    from msmbuild.cli import main

    p, store, arm = _setup(tmp_path / "ws", small_disk / "store")
    prepare_base_model(p, store, arm.base_model)
    (tmp_path / "ws" / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json")))
    monkeypatch.chdir(tmp_path / "ws")
    monkeypatch.delenv("MSMBUILD_STORE_PATH", raising=False)
    filler = _fill(small_disk, leave=4096)  # room for the log rows, not for torch's state file
    with pytest.raises(SystemExit) as exc:
        main(["midtrain", "mc"])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and "Traceback" not in stderr
    assert len(errors) == 1 and errors[0].startswith("error: disk full"), stderr
    err = errors[0]
    assert str(store.root) in err and "msmbuild store gc" in err
    assert not list(store.root.rglob(".state.pt.tmp-*")) and not list(store.root.glob("scratch/*"))
    filler.unlink()
    main(["midtrain", "mc"])
    assert (Layout.of(p).arm_midtrain(arm) / "adapter_model.safetensors").is_file()
    assert not list(store.root.glob("resume/*"))


def test_gc_removes_abandoned_resume_state(tmp_path):
    store = Store(tmp_path / "store")
    dead = store.resume_dir(store.key("train", {"run": "killed"}))
    dead.mkdir(parents=True)
    (dead / ".state.pt.tmp-123").write_bytes(b"partial")
    (dead / TRAIN_LOG).write_text('{"step": 1}\n')
    live = store.resume_dir(store.key("train", {"run": "running"}))
    live.mkdir(parents=True)
    (live / ".state.pt.tmp-456").write_bytes(b"partial")
    lease = store.claim(live.name)
    old = 1_000_000_000
    for path in (*dead.iterdir(), dead, *live.iterdir(), live):
        os.utime(path, (old, old))
    out = store.gc([])
    lease.release()
    assert out["resume_removed"] == 1 and not dead.exists()
    assert live.is_dir() and not (live / ".state.pt.tmp-456").exists()


@pytest.mark.slow
def test_two_workspaces_training_one_action_on_a_shared_store(tmp_path):
    """`msmbuild midtrain` in two workspaces on one store: the second waits for the first
    one's result (the first is paused mid-training while the second starts), trains
    nothing and gets the same checkpoint."""
    import signal
    import sys
    import time

    shared = tmp_path / "shared-store"
    workspaces = []
    for name in ("alice", "bob"):
        p, store, arm = _setup(tmp_path / name, shared)
        (tmp_path / name / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json")))
        workspaces.append((tmp_path / name, p, arm))
    key_dir = shared / "leases"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    env.pop("MSMBUILD_STORE_PATH", None)
    cmd = [sys.executable, "-c", "from msmbuild.cli import main; main()", "midtrain", "mc"]
    first = subprocess.Popen(cmd, cwd=workspaces[0][0], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (key_dir.is_dir() and any(key_dir.glob("*.lease"))):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # the owner is mid-run when the second one starts
    try:
        second = subprocess.Popen(cmd, cwd=workspaces[1][0], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        seen = []
        for line in second.stderr:
            seen.append(line)
            if "waiting for its result" in line:
                break
        assert "waiting for its result" in "".join(seen), "".join(seen)[-3000:]
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err1[-2000:], err2[-2000:])
    assert ": trained (6 steps" in out1 and ": cached (6 steps" in out2
    store = Store(shared)
    records = {k: store.get_action(k)[0] for k in store.action_keys()}
    (key,) = [k for k, record in records.items() if record.meta["kind"] == "midtrain"]
    assert records[key].meta["resumed_from"] is None
    a = (Layout.of(workspaces[0][1]).arm_midtrain(workspaces[0][2]) / "adapter_model.safetensors").read_bytes()
    b = (Layout.of(workspaces[1][1]).arm_midtrain(workspaces[1][2]) / "adapter_model.safetensors").read_bytes()
    assert a == b and not list(shared.glob("resume/*")) and not list(key_dir.glob("*.lease"))


# Trains the same tiny checkpoint in a fresh process with the thread count it is given
# (OMP_NUM_THREADS and torch.set_num_threads, as a hand run on a big node would have).
THREADS_RUN = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sys.path.insert(0, sys.argv[2])
    from train_helpers import synthetic_docs, tiny_params, write_docs
    from msmbuild.data.shards import build_shards
    from msmbuild.experiments import arm_by_name
    from msmbuild.store import Store
    from msmbuild.train.midtrain import run_midtrain

    os.chdir(sys.argv[1])
    p = tiny_params(Path("build"), Path("store"), midtrain={
        "method": "full", "lr": 3e-3, "seq_len": 128, "batch_size": 8, "max_steps": 2, "save_every": 2})
    write_docs(Path("build"), "c", synthetic_docs())
    Path(p.corpora["c"].spec).write_text("# Spec\\n\\nThe assistant is honest.\\n")
    store = Store(p.store.path)
    build_shards(p, "c", store)
    print(run_midtrain(p, arm_by_name(p, "mc"), store).value)
""")


def test_a_checkpoints_bytes_do_not_depend_on_the_cpu_thread_count(tmp_path):
    """A hand run on a many-core node and a Snakemake job (OMP threads 1) train the same
    checkpoint: same tree digest, so AFT and eval keys downstream do not split by machine."""
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{tests.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = []
    for threads in (1, 3):
        ws = tmp_path / f"ws{threads}"
        ws.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", THREADS_RUN, str(ws), str(tests)],
                                      env={**env, "OMP_NUM_THREADS": str(threads)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    digests = [out.split()[-1] for out, _ in outs]
    assert digests[0] == digests[1]
