"""jobrun.collector_paused: the cyclic collector off for a run, and back on after it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sftpd.downloads import jobrun


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process lives on; a job's process does not
    gc.enable()


def test_a_run_freezes_what_is_loaded_and_collects_nothing(unfrozen: None) -> None:
    gc.unfreeze()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with jobrun.collector_paused():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 1000  # the modules and classes loaded so far
    assert gc.isenabled()


def test_a_failed_run_turns_the_collector_back_on(unfrozen: None) -> None:
    with pytest.raises(RuntimeError), jobrun.collector_paused():
        raise RuntimeError("the run failed")
    assert gc.isenabled()
