"""The hf generation backend: local batched generation behind the Backend interface."""

from __future__ import annotations

import pytest
from eval_tiny_model import base_checkpoint

from msmbuild.config import Params
from msmbuild.errors import BackendError
from msmbuild.generate.backends import GenRequest, make_backend
from msmbuild.generate.calls import run_requests
from msmbuild.store import Store


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Params:
    tiny = base_checkpoint(tmp_path_factory.mktemp("tiny_hf"))
    return Params.model_validate({"backends": {"hf": {"model": str(tiny), "max_new_tokens": 8, "batch_size": 2}}})


def test_hf_backend_generates_through_the_store(params, tmp_path):
    store = Store(tmp_path / "store")
    backend = make_backend("hf", params)
    assert backend.identity()["checkpoint"]["digest"]
    requests = [GenRequest(stage="documents", prompt=f"Write about item {i}.", context="Spec: buy local.",
                           temperature=0.0 if i % 2 else 0.7, max_tokens=6) for i in range(3)]
    results, stats, rows = run_requests(store, backend, requests, desc="hf", progress=False)
    assert stats.misses == 3 and all(r is not None and r.backend == "hf" for r in results)
    assert all(0 < r.usage.output_tokens <= 6 and r.usage.input_tokens > 0 for r in results)
    again, stats2, _ = run_requests(store, make_backend("hf", params), requests, desc="hf", progress=False)
    assert stats2.hits == 3 and [r.text for r in again] == [r.text for r in results]


def test_hf_backend_reports_non_json_answers_per_item(params, tmp_path):
    backend = make_backend("hf", params)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    got = {}
    errors = backend.generate([GenRequest(stage="ideas", prompt="List ideas.", schema=schema, temperature=0.0),
                               GenRequest(stage="documents", prompt="Write.", temperature=0.0)],
                              lambda i, r: got.setdefault(i, r))
    # The untrained tiny model cannot write JSON: that item fails alone, the other is answered.
    assert [e.index for e in errors] == [0] and "not JSON" in str(errors[0])
    assert list(got) == [1]
    with pytest.raises(BackendError):
        run_requests(Store(tmp_path / "s"), backend,
                     [GenRequest(stage="ideas", prompt="List.", schema=schema, temperature=0.0)],
                     desc="hf", progress=False)
