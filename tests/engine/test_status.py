# SPDX-License-Identifier: GPL-3.0-or-later
"""Status: the values stored in the database, str() and ready."""

from __future__ import annotations

import enum

import pytest

import engine
from engine import Status

VALUES = {
    "DEFAULT": "Default",
    "HOLD": "Hold",
    "DO": "Do",
    "DOING": "Doing",
    "DONE": "Done",
    "ABORT": "Abort",
    "UNDO": "Undo",
    "UNDOING": "Undoing",
    "UNDONE": "Undone",
    "ERROR": "Error",
    "WAIT": "Wait",
}

READY = {Status.DONE, Status.UNDONE, Status.HOLD, Status.ERROR}


def test_status_is_an_enum_exported_from_the_package() -> None:
    assert issubclass(Status, enum.Enum)
    assert engine.Status is Status
    assert "Status" in engine.__all__


def test_status_members_and_values() -> None:
    assert {s.name: s.value for s in Status} == VALUES


@pytest.mark.parametrize("name", sorted(VALUES))
def test_status_round_trips_through_its_value(name: str) -> None:
    status = Status[name]
    assert Status(VALUES[name]) is status


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_str_is_the_value(status: Status) -> None:
    assert str(status) == status.value
    assert f"{status}" == status.value


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_ready(status: Status) -> None:
    assert status.ready is (status in READY)


def test_wait_and_default_are_not_ready() -> None:
    # A waiting task still has something left to do; Default is no final state.
    assert not Status.WAIT.ready
    assert not Status.DEFAULT.ready


def test_unknown_value_is_refused() -> None:
    with pytest.raises(ValueError):
        Status("done")  # values are case-sensitive, as stored
    with pytest.raises(ValueError):
        Status("Running")
