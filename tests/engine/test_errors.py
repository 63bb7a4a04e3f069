# SPDX-License-Identifier: GPL-3.0-or-later
"""The public errors: what callers catch and what their messages say."""

from __future__ import annotations

import pytest

import engine
from engine import ChangeConflictError, EngineError


def test_change_conflict_error_names_the_change() -> None:
    e = ChangeConflictError("7", change_kind="install", subject='snap "foo"')
    assert isinstance(e, EngineError)
    assert e.change_id == "7"
    assert e.change_kind == "install"
    assert str(e) == 'cannot start a change for snap "foo": change 7 (install) is in progress'


def test_change_conflict_error_keeps_a_given_message() -> None:
    e = ChangeConflictError(3, 'snap "foo" has "refresh" change in progress')
    assert e.change_id == "3"
    assert "change in progress" in str(e)
    with pytest.raises(EngineError):
        raise e


def test_change_conflict_error_is_importable_from_engine() -> None:
    assert "ChangeConflictError" in engine.__all__
