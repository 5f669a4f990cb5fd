"""Progress in logs: periodic lines (count, rate, ETA, loss) when stderr is not a terminal;
a Message Batch reports its id, status counts and elapsed time as it polls."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from msmbuild.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_carry_count_rate_eta_and_values(monkeypatch) -> None:
    monkeypatch.setenv("MSMBUILD_PROGRESS_EVERY_S", "0")
    log = io.StringIO()
    bar = Progress(10, "train", "step", stream=log)
    bar.update(4, loss="2.345")
    bar.update(6, loss="1.234")
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"train: 4/10 steps \(40%\), [\d.]+ step/s, elapsed \d+s, ETA \d+s, loss 2\.345", lines[0])
    assert re.fullmatch(r"train: 10/10 steps \(100%\), [\d.]+ step/s, elapsed \d+s, loss 1\.234", lines[1])


def test_a_long_interval_still_writes_the_final_line(monkeypatch) -> None:
    monkeypatch.setenv("MSMBUILD_PROGRESS_EVERY_S", "3600")
    log = io.StringIO()
    bar = Progress(5, "documents", "call", stream=log)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert log.getvalue().startswith("documents: 5/5 calls (100%)") and log.getvalue().count("\n") == 1


def test_a_terminal_gets_a_bar_and_quiet_gets_nothing(monkeypatch) -> None:
    monkeypatch.setenv("MSMBUILD_PROGRESS_EVERY_S", "0")
    tty = _Terminal()
    bar = Progress(3, "ideas", "call", stream=tty)
    bar.update(3)
    bar.close()
    assert tty.getvalue().startswith("\rideas:") and "/3 [" in tty.getvalue()  # a tqdm bar, not lines
    quiet = io.StringIO()
    bar = Progress(3, "ideas", "call", enabled=False, stream=quiet)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_generation_writes_progress_lines_to_a_log(monkeypatch, capsys, tmp_path: Path) -> None:
    from msmbuild.generate.backends.base import GenRequest
    from msmbuild.generate.backends.offline import OfflineBackend
    from msmbuild.generate.calls import run_requests
    from msmbuild.store import Store

    monkeypatch.setenv("MSMBUILD_PROGRESS_EVERY_S", "0")
    reqs = [GenRequest(stage="document", prompt=f"idea {i}", context="Some spec text here.") for i in range(4)]
    run_requests(Store(tmp_path / "store"), OfflineBackend(), reqs, desc="small: documents", progress=True)
    err = capsys.readouterr().err
    assert "small: documents: 4/4 calls (100%)" in err and " call/s" in err


def test_batch_polling_reports_id_status_counts_and_elapsed(monkeypatch, capsys, tmp_path: Path) -> None:
    from msmbuild.config import AnthropicConfig, BatchConfig, Params
    from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
    from msmbuild.generate.backends.base import GenRequest
    from msmbuild.testing import FakeAnthropic

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-progress")
    with FakeAnthropic(batch_latency_s=0.3) as server:
        cfg = AnthropicConfig(model="claude-haiku-4-5", base_url=server.url, batch=BatchConfig(
            enabled=True, threshold=1, poll_initial_s=0.05, poll_max_s=0.1))
        backend = AnthropicBackend(cfg, Params().prices, state_dir=tmp_path / "batches")
        got = []
        try:
            errors = backend.generate([GenRequest(stage="document", prompt=f"doc {i}") for i in range(3)],
                                      lambda i, res: got.append(i))
        finally:
            backend.close()
    assert errors == [] and sorted(got) == [0, 1, 2]
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("anthropic batch ")]
    assert re.fullmatch(r"anthropic batch msgbatch_\w+: in_progress; processing 3, succeeded 0, errored 0, "
                        r"canceled 0, expired 0; elapsed \d+s", lines[0]), lines
    assert re.fullmatch(r"anthropic batch msgbatch_\w+: ended; processing 0, succeeded 3, .*", lines[-1]), lines


@pytest.mark.slow
def test_training_log_has_step_lines_with_loss(monkeypatch, capsys, tmp_path: Path) -> None:
    import torch
    from test_train_midtrain import _setup

    from msmbuild.models import load_model, prepare_base_model
    from msmbuild.train.loop import fit, prepare_model

    monkeypatch.setenv("MSMBUILD_PROGRESS_EVERY_S", "0")
    p, store = _setup(tmp_path)
    cfg = p.midtrain.model_copy(update={"max_steps": 3})
    model = prepare_model(load_model(prepare_base_model(p, store).path), cfg)
    data = torch.randint(0, 1000, (16, 32), generator=torch.Generator().manual_seed(0))
    fit(model, cfg, 16, lambda items: {"input_ids": data[[k % 16 for k in items]],
                                       "labels": data[[k % 16 for k in items]]}, tmp_path / "state")
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("train: ")]
    assert lines and re.fullmatch(r"train: 3/3 steps \(100%\), [\d.]+ step/s, elapsed \d+s, loss [\d.]+", lines[-1])
