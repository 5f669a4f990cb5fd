"""Fault suite: one owner per action being computed (two real processes on one store,
kill -9 of the owner, a silent owner on another host)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from msmbuild.store import Store
from msmbuild.train.midtrain import run_midtrain

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]

# A trainer stand-in: it owns <store>/resume/<key>/ while it computes, proves nobody else
# is in there (an exclusive marker), resumes from the step it finds there, and can be
# told to hang after a step so the test can kill it.
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from msmbuild.store import Store

    store_root, out_file, hang_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = Store(store_root)
    s.lease_poll_s = 0.05
    key = s.key("train", {"run": 1})

    def compute(workdir: Path) -> dict:
        state = s.resume_dir(key)
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(state / "owner", os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # fails if shared
        os.write(fd, str(os.getpid()).encode()); os.close(fd)
        step_file = state / "step"
        start = int(step_file.read_text()) if step_file.exists() else 0
        go = Path(store_root).parent / "go"
        for step in range(start, 6):
            while not go.exists():  # the test says when the trainer may go on
                time.sleep(0.02)
            step_file.write_text(str(step + 1))
            if step + 1 == hang_after:
                print("hanging", flush=True)
                time.sleep(3600)
        (state / "owner").unlink()
        (workdir / "weights.bin").write_bytes(b"w" * 64)
        return {"resumed_from": start or None, "pid": os.getpid()}

    r = s.memo_tree("train", {"run": 1}, compute)
    Path(out_file).write_text(json.dumps({"source": r.source, "tree": r.value, "meta": r.meta}))
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _start(store: Path, out: Path, hang_after: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(store), str(out), str(hang_after)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_two_processes_training_one_action_never_share_its_resume_state(tmp_path):
    store = tmp_path / "store"
    s = Store(store)
    key = s.key("train", {"run": 1})
    first = _start(store, tmp_path / "out0.json")
    _wait_for(s.resume_dir(key) / "owner", first)  # the first one is training
    second = _start(store, tmp_path / "out1.json")
    line = second.stderr.readline()  # the second one says it waits (or fails on old code)
    (tmp_path / "go").touch()
    errs = [p.communicate(timeout=120)[1] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [line, *errs]
    assert "is being computed by" in line and "waiting for its result" in line
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [o["source"] for o in outs] == ["computed", "local"]
    assert outs[0]["tree"] == outs[1]["tree"]
    assert outs[0]["meta"]["resumed_from"] is None
    assert not s.resume_dir(key).exists() and not s.lease_path(key).exists()


def test_a_killed_owner_is_taken_over_and_its_state_resumed(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "go").touch()
    owner = _start(store, tmp_path / "owner.json", hang_after=3)
    assert owner.stdout.readline().strip() == "hanging"
    s = Store(store)
    key = s.key("train", {"run": 1})
    assert json.loads(s.lease_path(key).read_text())["pid"] == owner.pid
    (s.resume_dir(key) / "owner").unlink()  # the dead process's marker (it cannot clean up)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    second = _start(store, tmp_path / "second.json")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    out = json.loads((tmp_path / "second.json").read_text())
    assert out["source"] == "computed" and out["meta"]["resumed_from"] == 3
    assert "took over the lease" in err
    assert not s.lease_path(key).exists()


def test_a_silent_owner_on_another_host_is_taken_over_after_its_heartbeat_stops(tmp_path):
    s = Store(tmp_path / "store")
    s.lease_stale_s, s.lease_poll_s = 0.3, 0.05
    key = s.key("train", {"run": 2})
    path = s.lease_path(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": f"not-{socket.gethostname()}", "pid": 1, "token": "t"}))
    lease = s.claim(key)
    assert lease is not None and lease.held()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lease.release()
    assert not path.exists()


def test_a_live_owner_keeps_its_lease_while_it_beats(tmp_path):
    s = Store(tmp_path / "store")
    key = s.key("train", {"run": 3})
    mine = s.claim(key)
    other = Store(tmp_path / "store")
    other.lease_stale_s, other.lease_poll_s = 0.5, 0.05
    from msmbuild.store._lease import StaleWatch, try_acquire

    assert try_acquire(other.lease_path(key)) is None
    watch = StaleWatch(other.lease_path(key), other.lease_stale_s)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        os.utime(other.lease_path(key))  # the owner's heartbeat (its thread beats every 10 s)
        assert not watch.owner_gone()
        time.sleep(0.1)
    mine.release()


# A stand-in trainer that checks its lease before each write to resume/<key>/, as the
# real one does (Store.check_lease), and logs every write with its pid.
CHECKING_WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from msmbuild.store import Store

    store_root, out_file, stale_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s = Store(store_root)
    s.lease_poll_s, s.lease_stale_s, s.lease_heartbeat_s = 0.05, stale_s, 0.05
    key = s.key("train", {"run": 4})

    def compute(workdir: Path) -> dict:
        state = s.resume_dir(key)
        state.mkdir(parents=True, exist_ok=True)
        go = Path(store_root).parent / "go"
        for step in range(4):
            s.check_lease(key)
            with open(state / "writes", "a") as f:
                f.write(f"{os.getpid()} {step}\\n")
            print(f"wrote {step}", flush=True)
            while not go.exists():
                time.sleep(0.02)
        (workdir / "weights.bin").write_bytes(b"w" * 64)
        return {}

    r = s.memo_tree("train", {"run": 4}, compute)
    Path(out_file).write_text(json.dumps({"source": r.source, "tree": r.value}))
""")


def test_a_paused_owner_stops_writing_once_its_lease_is_taken_over(tmp_path):
    """SIGSTOP past the stale time (SLURM suspend-preemption): a waiter takes the lease
    over; when the paused owner resumes it writes nothing more into resume/<key>/ and
    waits for the new owner's result instead."""
    store = tmp_path / "store"
    s = Store(store)
    key = s.key("train", {"run": 4})

    def start(name: str, stale_s: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CHECKING_WORKER, str(store), str(tmp_path / name),
                                 str(stale_s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env())

    paused = start("paused.json", 3600.0)
    assert paused.stdout.readline().strip() == "wrote 0"
    paused.send_signal(signal.SIGSTOP)
    try:
        successor = start("successor.json", 0.5)
        assert successor.stdout.readline().strip() == "wrote 0"  # it took the lease over
    finally:
        paused.send_signal(signal.SIGCONT)
    (tmp_path / "go").touch()
    (out_paused, err_paused), (_, err_successor) = [p.communicate(timeout=120) for p in (paused, successor)]
    errs = [err_paused, err_successor]
    assert [paused.returncode, successor.returncode] == [0, 0], errs
    assert out_paused == ""  # not one more write once resumed
    outs = [json.loads((tmp_path / n).read_text()) for n in ("paused.json", "successor.json")]
    assert [o["source"] for o in outs] == ["local", "computed"] and outs[0]["tree"] == outs[1]["tree"]
    assert not s.resume_dir(key).exists() and not s.lease_path(key).exists()
    assert "lost the lease" in errs[0] and "took over the lease" in errs[1]


def test_a_trainer_whose_lease_is_taken_over_stops_and_resumes_from_saved_state(tmp_path, caplog):
    """The real trainer checks its lease before each write to its resume state: taken
    over at step 3, it writes nothing more, waits, takes the lease back from the silent
    successor and resumes from its step-2 state."""
    import logging

    from test_faults_train import _setup

    p, store, arm = _setup(tmp_path)
    store.lease_stale_s, store.lease_poll_s = 0.3, 0.05

    taken: list[int] = []

    def take_over(step: int) -> None:
        if step == 3 and not taken:  # what a waiter's takeover does: the stale file goes, a new one is made
            taken.append(step)
            path = next(store.root.glob("leases/*.lease"))
            path.unlink()
            path.write_text(json.dumps({"host": "another-node", "pid": 1, "token": "theirs"}))

    caplog.set_level(logging.WARNING)
    result = run_midtrain(p, arm, store, on_step=take_over)
    assert "lost the lease" in caplog.text and "took over the lease" in caplog.text
    assert result.meta["resumed_from"] == 2 and result.source == "computed"
