"""Generation backends behind one interface (see base.py), and the factory that picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from msmbuild.errors import BackendError
from msmbuild.generate.backends.base import Backend, GenRequest, GenResult, ItemError, Usage

if TYPE_CHECKING:
    from msmbuild.config import Params

BACKEND_NAMES = ("offline", "anthropic", "hf")


def make_backend(name: str, params: Params, max_concurrency: int | None = None) -> Backend:
    """The backend called name, configured from params; heavy imports happen only here."""
    if name == "offline":
        from msmbuild.generate.backends.offline import OfflineBackend

        return OfflineBackend(params.backends.offline)
    if name == "anthropic":
        from msmbuild.config import store_path
        from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
        from msmbuild.layout import batch_state_dir

        return AnthropicBackend(params.backends.anthropic, params.prices,
                                max_concurrency=max_concurrency,
                                state_dir=batch_state_dir(store_path(params)))
    if name == "hf":
        from msmbuild.generate.backends.hf import HFBackend

        return HFBackend(params.backends.hf)
    raise BackendError(f"unknown generation backend {name!r} (choose from {', '.join(BACKEND_NAMES)})")


__all__ = ["BACKEND_NAMES", "Backend", "GenRequest", "GenResult", "ItemError", "Usage", "make_backend"]
