"""Fault suite, generation side: a 200 answer cut off mid-JSON, a fatal error while
answers are in flight, a corpus whose filter keeps no document."""

from __future__ import annotations

import threading

import pytest
from test_faults_store import _run_cli

from msmbuild.config import AnthropicConfig, BatchConfig, Params
from msmbuild.errors import BackendError
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
from msmbuild.generate.backends.base import GenRequest
from msmbuild.generate.calls import run_requests
from msmbuild.store import Store
from msmbuild.testing import FakeAnthropic

pytestmark = pytest.mark.faults

MODEL = "claude-haiku-4-5"


@pytest.fixture
def server():
    with FakeAnthropic() as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")


def _backend(server, tmp_path, concurrency=4, **kw) -> AnthropicBackend:
    cfg = AnthropicConfig(model=MODEL, base_url=server.url, batch=BatchConfig(enabled=False), **kw)
    return AnthropicBackend(cfg, Params().prices, max_concurrency=concurrency, state_dir=tmp_path / "batches")


def _reqs(n: int) -> list[GenRequest]:
    return [GenRequest(stage="documents", prompt=f"write document {i}") for i in range(n)]


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_an_answer_cut_off_mid_json_is_retried_like_a_dropped_connection(server, tmp_path, http_client):
    server.inject("malformed_json", times=2, match="document 7")
    store = Store(tmp_path / "store")
    results, stats, _ = run_requests(store, _backend(server, tmp_path, http_client=http_client), _reqs(20),
                                     desc="documents", progress=False)
    assert all(r is not None and r.text.startswith(f"Answer to: write document {i}\n")
               for i, r in enumerate(results))
    s = server.stats()
    assert s["faults_fired"]["malformed_json"] == 2 and s["prompts"]["write document 7"] == 3
    assert stats.misses == 20 and stats.errors == 0


def test_a_fatal_error_lets_answers_in_flight_land_and_the_rerun_pays_nothing_twice(server, tmp_path):
    """A 402 on one request stops the run, but the requests already sent are awaited and
    stored: the rerun sends only what was never answered."""
    server.hold_after(1)  # the first answer (the rate probe) comes; later ones wait for release()
    server.inject("402", times=1, match="document 3")
    ended = threading.Event()

    def release_after_the_stop() -> None:
        while not server.stats()["faults_fired"].get("402"):
            threading.Event().wait(0.01)
        ended.wait(1.0)  # a client that gave up on its requests ends here without them
        server.release()

    helper = threading.Thread(target=release_after_the_stop)
    helper.start()
    store = Store(tmp_path / "store")
    try:
        with pytest.raises(BackendError, match="refused"):
            run_requests(store, _backend(server, tmp_path), _reqs(8), desc="documents", progress=False)
    finally:
        ended.set()
        helper.join()
    first = server.stats()
    answered = first["endpoints"]["messages_ok"]
    assert answered == 4  # document 0, then 1, 2 and 4 in flight beside 3; 5-7 never sent
    results, stats, _ = run_requests(store, _backend(server, tmp_path), _reqs(8), desc="documents",
                                     progress=False)
    assert all(r is not None for r in results)
    assert stats.hits == answered and stats.misses == 8 - answered
    prompts = server.stats()["prompts"]
    assert all(prompts[f"write document {i}"] == 1 for i in (0, 1, 2, 4))



def _corpus(tmp_path, monkeypatch, **filters) -> None:
    import yaml
    from generate_helpers import SMALL_SPEC

    (tmp_path / "spec.md").write_text(SMALL_SPEC)
    corpus = {"spec": "spec.md", "n_assertions": 1, "n_doc_types": 1, "n_doc_ideas": 2, "filters": filters}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"store": {"path": str(tmp_path / "store")}, "corpora": {"c": corpus}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MSMBUILD_STORE_PATH", raising=False)


def _generate_documents(capsys) -> tuple[int, str]:
    for stage in ("tree", "ideas"):
        code, _, err = _run_cli(["generate", stage, "c", "--quiet"], capsys)
        assert code == 0, err
    code, _, err = _run_cli(["generate", "documents", "c", "--quiet"], capsys)
    return code, err


def test_a_corpus_whose_answers_have_no_content_fails_at_generation(tmp_path, monkeypatch, capsys):
    """Answers without <content> give empty documents; the length filter drops them all.
    That is an error of `generate documents` (naming the filter and the reason), not a
    '0 tokens' failure in midtraining later. (The patch stands in for a generator whose
    answers lack the block: document_content is what finds it.)"""
    _corpus(tmp_path, monkeypatch)
    monkeypatch.setattr("msmbuild.generate.stages.document_content", lambda answer: "")
    code, err = _generate_documents(capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "corpus 'c': the filters kept no document (10 generated, 0 kept: 10 too short)" in err
    assert "filters.min_chars (200) dropped 10" in err and "10 answers had no <content>" in err


def test_a_corpus_whose_documents_are_all_too_long_names_max_chars(tmp_path, monkeypatch, capsys):
    _corpus(tmp_path, monkeypatch, min_chars=1, max_chars=2)
    code, err = _generate_documents(capsys)
    assert code == 2 and "filters.max_chars (2) dropped 10" in err, err
    assert "documents longer than 2 characters" in err
