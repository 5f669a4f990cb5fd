"""Loopback servers and fixtures used by tests and benchmarks (no network, no model)."""

from msmbuild.testing.fake_anthropic import FakeAnthropic

__all__ = ["FakeAnthropic"]
