# SPDX-License-Identifier: GPL-3.0-or-later
"""The interface manager's failure table: its handlers made to fail one by one, over a recording backend.

Read like test_snap_failure_table.py: each line names what fails ("kind:phase"),
the profile operations expected from the start of the change to its end, and
the statuses that matter. Beside each line: the undo rules, and for a do-error
the connections and profiles left exactly as they were before the change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Status
from engine.testing import FakeClock
from managers.asserts import PrivateKey
from tests.support.failure_table import D, E, H, Handler, U, check_rules, first_of_each, inject, line_id, record

from .test_ifacestate import Iface

#: The profile backend's operations, as a line writes them.
RECORDED: dict[str, Callable[..., str]] = {
    "write": lambda snap, text: f"write {snap}",
    "remove": lambda snap: f"remove {snap}",
    "put_back": lambda snap, text: f"put-back {snap}" + (" (none)" if text is None else ""),
}
#: Each kind the interface manager registers: its do and undo handlers' names on its Handlers.
KINDS: dict[str, tuple[str, str]] = {
    "connect": ("do_connect", "undo_connect"),
    "disconnect": ("do_disconnect", "undo_disconnect"),
    "setup-profiles": ("do_setup_profiles", "undo_setup_profiles"),
    "auto-connect": ("do_auto_connect", "undo_auto_connect"),
    "auto-disconnect": ("do_auto_disconnect", "undo_auto_disconnect"),
    "remove-profiles": ("do_remove_profiles", "undo_remove_profiles"),
}
#: SNAP_KINDS are the snap manager's kinds a line may make fail to trigger an undo.
SNAP_KINDS: dict[str, tuple[str, str | None]] = {
    "start-snap-services": ("do_start_snap_services", "undo_start_snap_services"),
    "clear-snap": ("do_clear_snap", None),
    "unlink-snap": ("do_unlink_snap", "undo_unlink_snap"),
}


def handlers(s: Iface, kind: str) -> tuple[Handler, Handler | None]:
    """handlers are the registered do and undo handlers of kind (the interface manager's or the snap's)."""
    if kind in KINDS:
        do, undo = KINDS[kind]
        return getattr(s.im.handlers, do), getattr(s.im.handlers, undo)
    do, maybe = SNAP_KINDS[kind]
    return getattr(s.sm.handlers, do), None if maybe is None else getattr(s.sm.handlers, maybe)


@pytest.fixture
def s(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> Iterator[Iface]:
    system = Iface(tmp_path, root_key, acme_key, clock)
    system.install("library")
    system.publish_snap("reader")
    yield system
    system.stop()


def _run(s: Iface, failures: tuple[str, ...], make: Callable[[Iface], str]) -> tuple[str, list[str]]:
    for failure in failures:
        inject(s.o.task_runner, failure, *handlers(s, failure.split(":")[0]))
    ops: list[str] = []
    record(s.im.backend, RECORDED, ops)
    return make(s), ops


def _snapshot(s: Iface) -> tuple[Any, Any, Any]:
    return s.conns(), s.profile("library"), s.profile("reader")


Line = tuple[tuple[str, ...], list[str], dict[str, Status]]


def _check(s: Iface, cid: str, failures: tuple[str, ...], ops: list[str], expected_ops: list[str],
           statuses: dict[str, Status], before: tuple[Any, Any, Any]) -> None:
    assert ops == expected_ops, "\n".join(ops)
    tasks = s.tasks(cid)
    got = first_of_each(tasks)
    assert {k: got[k] for k in statuses} == statuses
    check_rules(s.o.task_runner, tasks, failures[0].split(":")[0])
    assert s.status(cid) == E
    assert "injected" in s.err(cid)
    if not any(f.endswith(":undo") for f in failures):
        assert _snapshot(s) == before  # the connections and both profiles as they were


# -- installing reader (library is installed): its profile is set up, its plugs auto-connected --------

#: What installing reader writes when nothing fails: its profile (setup-profiles), then both profiles
#: again once auto-connect has connected reader:books to library:books.
SET_UP = ["write reader", "write library", "write reader"]

INSTALL: list[Line] = [
    (("setup-profiles:do",), [], {"copy-snap-data": U, "setup-profiles": E, "link-snap": H}),
    (("auto-connect:do",), ["write reader", "put-back reader (none)"],
     {"setup-profiles": U, "link-snap": U, "auto-connect": E}),
    # a later failure undoes auto-connect (both profiles written without the connection), then
    # setup-profiles (reader had no profile before: none again)
    (("start-snap-services:do",), [*SET_UP, "write library", "write reader", "put-back reader (none)"],
     {"auto-connect": U, "setup-profiles": U, "start-snap-services": E}),
    # auto-connect's undo fails: the connection stays, so library's profile is written again with it
    (("start-snap-services:do", "auto-connect:undo"), [*SET_UP, "put-back reader (none)", "write library"],
     {"auto-connect": E, "setup-profiles": U, "start-snap-services": E}),
    (("start-snap-services:do", "setup-profiles:undo"), [*SET_UP, "write library", "write reader"],
     {"auto-connect": U, "setup-profiles": E}),
]


@pytest.mark.parametrize(("failures", "expected_ops", "statuses"), INSTALL, ids=[line_id(x[0]) for x in INSTALL])
def test_install_failure_table(s: Iface, failures: tuple[str, ...], expected_ops: list[str],
                               statuses: dict[str, Status]) -> None:
    before = _snapshot(s)
    cid, ops = _run(s, failures, lambda s: s.run(lambda sm: sm.install("reader")))
    _check(s, cid, failures, ops, expected_ops, statuses, before)


# -- disconnecting and connecting reader:books to library:books ---------------------------------

CONNECTIONS: list[tuple[str, tuple[str, ...], list[str], dict[str, Status]]] = [
    ("disconnect", ("disconnect:do",), [], {"disconnect": E, "setup-profiles": H}),
    # the undo of (dis)connect writes both profiles from the state as it is again (unchanged on disk)
    ("disconnect", ("setup-profiles:do",), ["write library", "write reader"], {"disconnect": U, "setup-profiles": E}),
    ("connect", ("connect:do",), [], {"connect": E, "setup-profiles": H}),
    ("connect", ("setup-profiles:do",), ["write library", "write reader"], {"connect": U, "setup-profiles": E}),
]


@pytest.mark.parametrize(("verb", "failures", "expected_ops", "statuses"), CONNECTIONS,
                         ids=[f"{x[0]}: {line_id(x[1])}" for x in CONNECTIONS])
def test_connection_failure_table(s: Iface, verb: str, failures: tuple[str, ...], expected_ops: list[str],
                                  statuses: dict[str, Status]) -> None:
    s.run(lambda sm: sm.install("reader"))
    if verb == "connect":
        assert s.status(s.act("disconnect", "reader", "books", "library", "books")) == D
    before = _snapshot(s)
    cid, ops = _run(s, failures, lambda s: s.act(verb, "reader", "books", "library", "books"))
    _check(s, cid, failures, ops, expected_ops, statuses, before)


# -- removing reader: its connections go, then its profile ---------------------------------------

#: DISCONNECTED: auto-disconnect writes both profiles without the connection; its undo, with it again.
DISCONNECTED = ["write library", "write reader"]

REMOVE: list[Line] = [
    (("auto-disconnect:do",), [], {"auto-disconnect": E, "unlink-snap": H}),
    (("remove-profiles:do",), [*DISCONNECTED, "write library", "write reader"],
     {"auto-disconnect": U, "unlink-snap": U, "remove-profiles": E}),
    (("clear-snap:do",), [*DISCONNECTED, "remove reader", "put-back reader", "write library", "write reader"],
     {"remove-profiles": U, "auto-disconnect": U, "clear-snap": E}),
]


@pytest.mark.parametrize(("failures", "expected_ops", "statuses"), REMOVE, ids=[line_id(x[0]) for x in REMOVE])
def test_remove_failure_table(s: Iface, failures: tuple[str, ...], expected_ops: list[str],
                              statuses: dict[str, Status]) -> None:
    s.run(lambda sm: sm.install("reader"))
    before = _snapshot(s)
    cid, ops = _run(s, failures, lambda s: s.run(lambda sm: sm.remove("reader")))
    _check(s, cid, failures, ops, expected_ops, statuses, before)
