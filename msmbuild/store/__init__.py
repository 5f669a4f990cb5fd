"""Content-addressed store: CAS objects, action cache, remote tier.

Public surface::

    store = Store(".msmbuild/store", remote="s3://bucket/msm", write_through=True)
    result = store.memo_json("call", inputs, compute)      # model calls, small values
    result = store.memo_tree("train", inputs, fit, dest)   # directories (checkpoints)
"""

from msmbuild.layout import DEFAULT_STORE_PATH
from msmbuild.store._actions import ActionResult
from msmbuild.store._cas import tree_digest
from msmbuild.store._roots import read_roots, write_roots
from msmbuild.store._store import MemoResult, RepairReport, Store, TransferCount, VerifyReport
from msmbuild.store._writer import ResultWriter

__all__ = [
    "ActionResult",
    "DEFAULT_STORE_PATH",
    "MemoResult",
    "RepairReport",
    "ResultWriter",
    "Store",
    "TransferCount",
    "VerifyReport",
    "read_roots",
    "tree_digest",
    "write_roots",
]
