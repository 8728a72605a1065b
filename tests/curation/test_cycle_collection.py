"""The full curation passes pause Python's cycle collector and always restore it."""

from __future__ import annotations

import gc

import pytest

from curation import services


@pytest.fixture(autouse=True)
def _media_root():
    """Shadows the suite-wide media fixture, which needs Django's settings only."""


def test_it_pauses_the_cycle_collector_during_a_pass():
    seen = []

    @services._cycle_collection_paused()
    def a_pass():
        seen.append(gc.isenabled())

    a_pass()
    assert seen == [False]
    assert gc.isenabled()


def test_it_restores_the_cycle_collector_when_a_pass_fails():
    @services._cycle_collection_paused()
    def a_failing_pass():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        a_failing_pass()
    assert gc.isenabled()


def test_it_leaves_a_paused_collector_paused_after_a_nested_pass():
    with services._cycle_collection_paused():
        with services._cycle_collection_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


class Stop(Exception):
    pass


def _record_and_stop(seen):
    def first_query(*args, **kwargs):
        seen.append(gc.isenabled())
        raise Stop

    return first_query


def test_it_runs_flags_with_the_collector_paused(monkeypatch):
    seen: list[bool] = []
    monkeypatch.setattr(services.Project.objects, "select_related", _record_and_stop(seen))
    with pytest.raises(Stop):
        services.flags_recompute(project_id=1)
    assert seen == [False]
    assert gc.isenabled()


def test_it_builds_exports_with_the_collector_paused(monkeypatch):
    seen: list[bool] = []
    monkeypatch.setattr(services.DatasetExport.objects, "filter", _record_and_stop(seen))
    with pytest.raises(Stop):
        services.export_build(export_id=1)
    assert seen == [False]
    assert gc.isenabled()
