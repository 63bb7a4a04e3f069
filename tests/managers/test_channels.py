# SPDX-License-Identifier: GPL-3.0-or-later
"""Channels: snaps track one, install and refresh follow it, switch changes it, refresh never goes back."""

from __future__ import annotations

import pytest
import yaml

from engine import Status
from managers import NoUpdateAvailableError, SnapNotFoundError, SnapOperationError
from tests.support.system import System

D = Status.DONE


def current(system: System, name: str = "hello") -> tuple[str, str]:
    with system.o.state:
        snapst = system.sm.info(name)
        return snapst.current, snapst.tracking


def test_install_tracks_a_channel(system: System) -> None:
    system.publish("hello", "1.0")
    system.publish("hello", "2.0", channels=("edge",))
    cid = system.run(lambda sm: sm.install("hello", channel="edge"))
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("2", "latest/edge")
    # stable is the default; candidate has nothing of its own and follows stable
    system.publish("world", "1.0")
    cid = system.run(lambda sm: sm.install("world", channel="candidate"))
    assert system.status(cid) is D, system.err(cid)
    assert current(system, "world") == ("1", "latest/candidate")
    system.publish("other", "1.0", channels=("edge",))
    with system.o.state, pytest.raises(SnapNotFoundError, match=r"'stable' of the store .*no revision is released"):
        system.sm.install("other")
    with system.o.state, pytest.raises(SnapOperationError, match="its risk must be one of"):
        system.sm.install("other", channel="nightly")


def test_refresh_follows_the_tracked_channel_and_never_goes_back(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    system.publish("hello", "2.0", channels=("beta",))
    with system.o.state, pytest.raises(NoUpdateAvailableError):
        system.sm.refresh("hello")  # stable has nothing newer: beta's revision is not for it
    system.publish("hello", "3.0")
    cid = system.run(lambda sm: sm.refresh())
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("3", "latest/stable")
    # The store puts stable back to revision 1: refresh does not downgrade, it says why.
    system.sample.snap_store.release("hello", "1", ["stable"])
    with system.o.state, pytest.raises(NoUpdateAvailableError, match="older than the current 3"):
        system.sm.refresh("hello")
    with system.o.state, pytest.raises(NoUpdateAvailableError, match="no snaps have updates"):
        system.sm.refresh()
    # Going back is explicit: a revision.
    cid = system.run(lambda sm: sm.refresh("hello", revision="1"))
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("1", "latest/stable")


def test_refresh_to_a_channel_switches_and_refreshes(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    system.publish("hello", "2.0", channels=("beta",))
    cid = system.run(lambda sm: sm.refresh("hello", channel="beta"))
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("2", "latest/beta")
    # Back to stable: nothing newer there, so only the channel changes (a switch change).
    cid = system.run(lambda sm: sm.refresh("hello", channel="stable"))
    with system.o.state:
        chg = system.o.state.change(cid)
        assert chg is not None
        assert (chg.kind, chg.summary) == ("switch-snap-channel", 'Switch "hello" snap to channel "stable"')
        assert [t.kind for t in chg.tasks()] == ["switch-snap-channel"]
    assert system.status(cid) is D
    assert current(system) == ("2", "latest/stable")
    with system.o.state, pytest.raises(SnapOperationError, match="without naming one snap"):
        system.sm.refresh(channel="beta")


def test_switch_changes_only_the_channel_and_undoes(system: System) -> None:
    system.publish("hello", "1.0")
    system.run(lambda sm: sm.install("hello"))
    system.publish("hello", "2.0", channels=("edge",))
    cid = system.run(lambda sm: sm.switch("hello", "edge"))
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("1", "latest/edge")
    cid = system.run(lambda sm: sm.refresh())
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("2", "latest/edge")
    # undo puts back the channel tracked before
    system.o.task_runner.add_handler("error-trigger", _fail)
    with system.o.state:
        chg = system.sm.switch("hello", "beta")
        t = chg.tasks()[0]
        blocker = system.o.state.new_task("error-trigger", "fail after the switch")
        blocker.wait_for(t)
        for lane in t.lanes():
            blocker.join_lane(lane)
        chg.add_task(blocker)
        cid = chg.id
    system.o.settle(30)
    assert system.status(cid) is Status.ERROR
    assert current(system) == ("2", "latest/edge")


def _fail(task: object, tomb: object) -> None:
    raise RuntimeError("boom")


def test_a_store_without_channels_offers_its_newest_revision_as_stable(system: System) -> None:
    system.publish("hello", "1.0")
    system.publish("hello", "2.0")
    (system.base / "store/snaps/hello/channels.yaml").unlink()  # a store written before channels
    cid = system.run(lambda sm: sm.install("hello", channel="edge"))
    assert system.status(cid) is D, system.err(cid)
    assert current(system) == ("2", "latest/edge")
    assert system.sample.snap_store.channels("hello") == {"latest/stable": "2"}
    # The next push writes the channels of the old layout and the new ones.
    system.publish("hello", "3.0", channels=("beta",))
    assert yaml.safe_load((system.base / "store/snaps/hello/channels.yaml").read_text()) == {
        "latest/stable": 2, "latest/beta": 3}


def test_a_store_that_hides_its_newest_revision_does_not_downgrade(system: System) -> None:
    for v in ("1.0", "2.0", "3.0"):
        system.publish("hello", v)
    system.run(lambda sm: sm.install("hello"))
    assert current(system) == ("3", "latest/stable")
    store = system.base / "store/snaps/hello"
    (store / "channels.yaml").unlink()  # a mirror without channels, that hides revision 3
    (store / "3.yaml").unlink()
    with system.o.state, pytest.raises(NoUpdateAvailableError, match="offers revision 2, older than the current 3"):
        system.sm.refresh("hello")
    with system.o.state, pytest.raises(NoUpdateAvailableError):
        system.sm.refresh()
