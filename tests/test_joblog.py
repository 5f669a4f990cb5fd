"""A failed workflow job's own error line reaches the console, not only its log."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_dvc_sharing import params_yaml
from workspace_helpers import make_workflow_workspace

from msmbuild.joblog import error_line, main
from msmbuild.testing import FakeAnthropic


def test_error_line_is_the_last_error_of_the_log(tmp_path: Path, capsys) -> None:
    log = tmp_path / "ideas.log"
    log.write_text("pro_america ideas: 3 subdomains\nerror: first\nsome context\nerror: the cause\n\n")
    assert error_line(log) == "error: the cause"
    log.write_text("Traceback (most recent call last):\n  File x\nValueError: bad value\n")
    assert error_line(log) == "ValueError: bad value"
    log.write_text("just a line\n")
    assert error_line(log) == "just a line"
    assert main([str(log)]) == 1
    assert f"msmbuild: just a line  [log: {log}]" in capsys.readouterr().err
    assert error_line(tmp_path / "missing.log") == ""


@pytest.mark.slow
def test_missing_api_key_is_named_on_the_console(tmp_path: Path) -> None:
    with FakeAnthropic() as server:
        ws = make_workflow_workspace(tmp_path / "ws", params_yaml(server.url), ("pro_america.md",))
        env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
        proc = subprocess.run(["snakemake", "--cores", "2", "build/corpora/pro_america/ideas.json"], cwd=ws,
                              capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("msmbuild: error: ")]
    assert lines and "ANTHROPIC_API_KEY" in lines[0] and "[log: logs/" in lines[0]
