"""Loopback servers and fixtures used by tests and benchmarks (no network, no model)."""

from msmbuild.testing.fake_anthropic import (
    FakeAnthropic,
    Fault,
    inject_remote,
    spawn_server,
    stats_remote,
)

__all__ = ["FakeAnthropic", "Fault", "inject_remote", "spawn_server", "stats_remote"]
