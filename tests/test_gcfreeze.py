"""frozen_heap: the heap is frozen inside the block and thawed when the last user leaves."""

from __future__ import annotations

import gc

import pytest

from msmbuild.gcfreeze import frozen_heap


def test_frozen_inside_thawed_after_even_on_error() -> None:
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        with frozen_heap():
            assert gc.get_freeze_count() > 0
            raise RuntimeError("generation failed")
    assert gc.get_freeze_count() == 0


def test_nested_users_thaw_only_when_the_last_leaves() -> None:
    with frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # the outer block still runs
    assert gc.get_freeze_count() == 0
