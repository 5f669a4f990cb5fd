"""kill -9 in the middle of generation (Messages and Batches), rerun: nothing completed is
requested again, the rest completes; the API key lands in no store object, ledger or log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msmbuild.testing import FakeAnthropic

KEY = "sk-ant-test-" + "9f3c1e7a5b" * 3

DRIVER = '''
import json, logging, sys
from pathlib import Path
from msmbuild.config import AnthropicConfig, BatchConfig, Params
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
from msmbuild.generate.backends.base import GenRequest
from msmbuild.generate.calls import run_requests
from msmbuild.store import Store

from msmbuild.cli import exit_on_sigterm

exit_on_sigterm()  # as the msmbuild console script does
url, store_dir, n, batch, log_file = sys.argv[1:]
logging.basicConfig(level=logging.DEBUG, filename=log_file)
cfg = AnthropicConfig(model="claude-haiku-4-5", base_url=url, batch=BatchConfig(
    enabled=batch == "1", threshold=1, poll_initial_s=0.05, poll_max_s=0.1))
store = Store(store_dir)
backend = AnthropicBackend(cfg, Params().prices, max_concurrency=2, state_dir=Path(store_dir) / "batches")
reqs = [GenRequest(stage="documents", prompt=f"write document {i}") for i in range(int(n))]
_, stats, _ = run_requests(store, backend, reqs, desc="documents", progress=False)
print(json.dumps({"hits": stats.hits, "misses": stats.misses, "errors": stats.errors}))
'''


@pytest.fixture
def env(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    environ = {**os.environ, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_LOG": "debug"}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return driver, environ


def _start(driver, environ, url, store, n, batch, log):
    return subprocess.Popen([sys.executable, str(driver), url, str(store), str(n), batch, str(log)],
                            env=environ, stdout=subprocess.PIPE, stderr=open(f"{log}.stderr", "w"), text=True)


def _wait_for(cond, what, timeout=60.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _stored(store_dir: Path, n: int) -> set[int]:
    """Indices of requests whose answers are in the store (read through the store API)."""
    from msmbuild.config import AnthropicConfig, Params
    from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
    from msmbuild.generate.backends.base import GenRequest
    from msmbuild.generate.calls import call_key
    from msmbuild.store import Store

    store = Store(store_dir)
    backend = AnthropicBackend(AnthropicConfig(model="claude-haiku-4-5"), Params().prices)
    reqs = [GenRequest(stage="documents", prompt=f"write document {i}") for i in range(n)]
    return {i for i, r in enumerate(reqs) if store.lookup_json(call_key(store, backend, r)) is not None}


def _assert_key_nowhere(root: Path) -> None:
    logs = list(root.glob("*.log*"))
    assert logs and any(p.stat().st_size for p in logs)  # the SDK's debug logs were written
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"API key found in {path}"


def _stop_after_8_answers(env, server, store, n, sig, tmp_path) -> int:
    """Run the driver in Messages mode, send sig once 8 answers went out; its exit code."""
    driver, environ = env
    proc = _start(driver, environ, server.url, store, n, "0", tmp_path / "run1.log")
    _wait_for(lambda: server.stats()["endpoints"].get("messages_ok", 0) >= 8, "8 answers")
    proc.send_signal(sig)
    return proc.wait(timeout=60)


def _rerun(env, server, store, n, tmp_path) -> str:
    """Run the driver to completion again; its stdout (the hit/miss counts)."""
    driver, environ = env
    proc = _start(driver, environ, server.url, store, n, "0", tmp_path / "run2.log")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, (tmp_path / "run2.log.stderr").read_text()
    return out


@pytest.mark.slow
def test_kill_during_messages_then_rerun(tmp_path, env):
    n, store = 30, tmp_path / "store"
    with FakeAnthropic(latency_s=0.1) as server:
        _stop_after_8_answers(env, server, store, n, signal.SIGKILL, tmp_path)
        kept = _stored(store, n)
        assert 6 <= len(kept) < n
        first = server.stats()["prompts"]
        out = _rerun(env, server, store, n, tmp_path)
        assert f'"hits": {len(kept)}' in out
        prompts = server.stats()["prompts"]
        for i in kept:  # completed before the kill: never requested again
            assert prompts[f"write document {i}"] == 1
        assert all(prompts[f"write document {i}"] >= 1 for i in range(n))
        assert sum(prompts.values()) - n <= sum(first.values()) - len(kept)  # only in-flight ones repeat
        assert _stored(store, n) == set(range(n))
    _assert_key_nowhere(tmp_path)


@pytest.mark.slow
def test_sigterm_during_messages_stores_every_answer_received(tmp_path, env):
    """Deterministic under any load: the server answers exactly 8 requests and holds the
    next ones, so the driver can neither finish nor race ahead before the signal."""
    n, store = 40, tmp_path / "store"
    driver, environ = env
    with FakeAnthropic(latency_s=0.01) as server:
        server.hold_after(8)
        proc = _start(driver, environ, server.url, store, n, "0", tmp_path / "run1.log")
        # Both concurrency slots wait on held requests: the driver has received all 8 answers.
        _wait_for(lambda: server.stats()["held"] == 2, "2 held requests", timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        answered = server.stats()["endpoints"]["messages_ok"]
        kept = _stored(store, n)
        assert answered == 8 and len(kept) == answered  # every answer received was stored
        first = sum(server.stats()["prompts"].values())
        assert first == answered + 2  # the two held requests
        server.release()
        out = _rerun(env, server, store, n, tmp_path)
        assert f'"hits": {len(kept)}' in out
        prompts = server.stats()["prompts"]
        assert all(prompts[f"write document {i}"] == 1 for i in kept)
        assert sum(prompts.values()) - n <= first - len(kept) <= 2  # only what was in flight repeats
    _assert_key_nowhere(tmp_path)


@pytest.mark.slow
def test_kill_during_batch_then_rerun_collects(tmp_path, env):
    driver, environ = env
    n, store = 12, tmp_path / "store"
    with FakeAnthropic(batch_latency_s=1.0) as server:
        proc = _start(driver, environ, server.url, store, n, "1", tmp_path / "run1.log")
        _wait_for(lambda: list((store / "batches").glob("msgbatch_*.json")), "the batch ledger entry")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert server.stats()["endpoints"]["batches_create"] == 1 and _stored(store, n) == set()
        proc = _start(driver, environ, server.url, store, n, "1", tmp_path / "run2.log")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (tmp_path / "run2.log.stderr").read_text()
        stats = server.stats()
        assert stats["endpoints"]["batches_create"] == 1 and stats["batch_items"] == n
        assert stats["endpoints"].get("messages", 0) == 0
        assert _stored(store, n) == set(range(n))
        assert not list((store / "batches").glob("*.json"))
        # a third run is all hits: nothing reaches the server
        proc = _start(driver, environ, server.url, store, n, "1", tmp_path / "run3.log")
        out, _ = proc.communicate(timeout=120)
        assert f'"hits": {n}' in out and server.stats()["batch_items"] == n
    _assert_key_nowhere(tmp_path)
