"""Generation backends behind one interface (see base.py)."""

from msmbuild.generate.backends.base import Backend, GenRequest, GenResult, ItemError, Usage

__all__ = ["Backend", "GenRequest", "GenResult", "ItemError", "Usage"]
