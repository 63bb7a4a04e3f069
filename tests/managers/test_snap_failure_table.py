# SPDX-License-Identifier: GPL-3.0-or-later
"""The snap manager's failure table: one line per task kind and phase, read like snapd's sequence tables.

Each line makes one handler of an install or a refresh fail ("mount-snap:do-error":
the do handler of mount-snap raises before it does anything; "link-snap:undo-error":
a later task fails, and link-snap's undo raises when it is undone). A recording
backend wraps the real one and writes down each file operation it is asked for;
the line gives the operations expected from the start of the change to its end
(do and undo, in order) and the status of the tasks that matter. The rules every
line also obeys are checked beside it: the tasks before the failing one are
undone (or Done when they have no undo), the ones after it never ran, and a
do-error leaves the system as it was before the change.
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
from tests.support.system import KINDS, System, tree

#: The backend's operations that change files, and how one is written in the table: "op name revision".
RECORDED: dict[str, Callable[..., str]] = {
    "fetch_blob": lambda name, revision, *a, **k: f"fetch {name} {revision}",
    "remove_blob": lambda name, revision, *a, **k: f"remove-blob {name} {revision}",
    "mount": lambda name, revision, *a, **k: f"mount {name} {revision}",
    "unmount": lambda name, revision, *a, **k: f"unmount {name} {revision}",
    "copy_data": lambda name, old, new, **k: f"copy-data {name} {old or '-'}>{new}",
    "undo_copy_data": lambda name, new, **k: f"undo-copy-data {name} {new}",
    "cleanup_copy_data": lambda name, new, **k: f"cleanup-copy-data {name} {new}",
    "link": lambda info, **k: f"link {info.name} {info.revision}",
    "unlink": lambda name, **k: f"unlink {name}",
    "start_services": lambda info, apps, **k: f"start {info.name} {info.revision} {','.join(apps)}",
    "stop_services": lambda name, apps, **k: f"stop {name} {','.join(apps)}",
    "discard": lambda name, revision, **k: f"discard {name} {revision}",
}


def snap_handlers(s: System, kind: str) -> tuple[Handler, Handler | None]:
    """snap_handlers are the do and undo handlers the snap manager registers for kind (KINDS names them)."""
    def resolve(name: str | None) -> Handler | None:
        if name is None:
            return None
        obj: Any = s.sm.handlers
        for part in name.split("."):
            obj = getattr(obj, part)
        handler: Handler = obj
        return handler

    do_name, undo_name = KINDS[kind]
    do = resolve(do_name)
    assert do is not None
    return do, resolve(undo_name)


@pytest.fixture
def s(tmp_path: Path, root_key: PrivateKey, acme_key: PrivateKey, clock: FakeClock) -> Iterator[System]:
    system = System(tmp_path, root_key, acme_key, clock, names=("hello",))
    system.publish("hello", "1.0")
    yield system
    system.stop()


# -- install -------------------------------------------------------------------------------
# Every line: (what fails, the operations from the start of the change to its end, statuses that matter).
# The trigger of an undo-error line is the next line's do-error of start-snap-services (of cleanup for
# start-snap-services itself): it fails after the kind whose undo is tested has run.

#: READY_INSTALL: once the change is ready, whatever its end, copy-snap-data's cleanup runs (snapd's too).
READY_INSTALL = "cleanup-copy-data hello 1"

INSTALL: list[tuple[tuple[str, ...], list[str], dict[str, Status]]] = [
    (("download-snap:do",), [], {"prerequisites": D, "download-snap": E, "mount-snap": H}),
    (("validate-snap:do",), ["fetch hello 1", "remove-blob hello 1"],
     {"download-snap": U, "validate-snap": E, "mount-snap": H}),
    (("mount-snap:do",), ["fetch hello 1", "remove-blob hello 1"],
     {"download-snap": U, "mount-snap": E, "copy-snap-data": H}),
    (("copy-snap-data:do",), ["fetch hello 1", "mount hello 1", "unmount hello 1", "remove-blob hello 1"],
     {"mount-snap": U, "copy-snap-data": E, "link-snap": H}),
    (("link-snap:do",), ["fetch hello 1", "mount hello 1", "copy-data hello ->1", "undo-copy-data hello 1",
                         "unmount hello 1", "remove-blob hello 1"],
     {"copy-snap-data": U, "link-snap": E, "start-snap-services": H}),
    (("start-snap-services:do",), ["fetch hello 1", "mount hello 1", "copy-data hello ->1", "link hello 1",
                                   "unlink hello", "undo-copy-data hello 1", "unmount hello 1",
                                   "remove-blob hello 1"],
     {"link-snap": U, "start-snap-services": E, "cleanup": H}),
    (("cleanup:do",), ["fetch hello 1", "mount hello 1", "copy-data hello ->1", "link hello 1",
                       "start hello 1 svc", "stop hello svc", "unlink hello", "undo-copy-data hello 1",
                       "unmount hello 1", "remove-blob hello 1"],
     {"start-snap-services": U, "cleanup": E}),
    # undo errors: the undo that fails leaves its task in Error; the tasks before it are still undone
    (("start-snap-services:do", "link-snap:undo"),
     ["fetch hello 1", "mount hello 1", "copy-data hello ->1", "link hello 1", "undo-copy-data hello 1",
      "unmount hello 1", "remove-blob hello 1"],
     {"link-snap": E, "copy-snap-data": U, "mount-snap": U, "start-snap-services": E}),
    (("start-snap-services:do", "mount-snap:undo"),
     ["fetch hello 1", "mount hello 1", "copy-data hello ->1", "link hello 1", "unlink hello",
      "undo-copy-data hello 1", "remove-blob hello 1"],
     {"link-snap": U, "mount-snap": E, "download-snap": U}),
    (("cleanup:do", "start-snap-services:undo"),
     ["fetch hello 1", "mount hello 1", "copy-data hello ->1", "link hello 1", "start hello 1 svc",
      "unlink hello", "undo-copy-data hello 1", "unmount hello 1", "remove-blob hello 1"],
     {"start-snap-services": E, "link-snap": U}),
]


def _run(s: System, failures: tuple[str, ...], make: Callable[[Any], Any]) -> tuple[str, list[str]]:
    for failure in failures:
        inject(s.o.task_runner, failure, *snap_handlers(s, failure.split(":")[0]))
    ops: list[str] = []
    record(s.sm.backend, RECORDED, ops)
    return s.run(make), ops


def _check_rules(s: System, cid: str, failures: tuple[str, ...]) -> None:
    check_rules(s.o.task_runner, s.tasks(cid), failures[0].split(":")[0])
    assert s.status(cid) == E


@pytest.mark.parametrize(("failures", "expected_ops", "statuses"), INSTALL,
                         ids=[line_id(line[0]) for line in INSTALL])
def test_install_failure_table(s: System, failures: tuple[str, ...], expected_ops: list[str],
                               statuses: dict[str, Status]) -> None:
    cid, ops = _run(s, failures, lambda sm: sm.install("hello"))
    assert ops == [*expected_ops, READY_INSTALL]
    got = first_of_each(s.tasks(cid))
    assert {k: got[k] for k in statuses} == statuses
    _check_rules(s, cid, failures)
    assert "injected" in s.err(cid)
    if not any(f.endswith(":undo") for f in failures):
        assert [p for p in tree(s.root) if "hello" in p] == []  # a do-error leaves no trace of the snap
        assert "hello" not in s.snaps_state()


# -- refresh from 1 to 2 -----------------------------------------------------------------------

INSTALLED = ["stop hello svc", "unlink hello"]  # what the refresh does to revision 1 before linking 2

READY_REFRESH = "cleanup-copy-data hello 2"

REFRESH: list[tuple[tuple[str, ...], list[str], dict[str, Status]]] = [
    (("mount-snap:do",), ["fetch hello 2", "remove-blob hello 2"],
     {"download-snap": U, "mount-snap": E, "stop-snap-services": H}),
    (("stop-snap-services:do",), ["fetch hello 2", "mount hello 2", "unmount hello 2", "remove-blob hello 2"],
     {"mount-snap": U, "stop-snap-services": E, "unlink-current-snap": H}),
    (("unlink-current-snap:do",), ["fetch hello 2", "mount hello 2", "stop hello svc", "start hello 1 svc",
                                   "unmount hello 2", "remove-blob hello 2"],
     {"stop-snap-services": U, "unlink-current-snap": E, "copy-snap-data": H}),
    (("copy-snap-data:do",), ["fetch hello 2", "mount hello 2", *INSTALLED, "link hello 1", "start hello 1 svc",
                              "unmount hello 2", "remove-blob hello 2"],
     {"unlink-current-snap": U, "copy-snap-data": E, "link-snap": H}),
    (("link-snap:do",), ["fetch hello 2", "mount hello 2", *INSTALLED, "copy-data hello 1>2",
                         "undo-copy-data hello 2", "link hello 1", "start hello 1 svc", "unmount hello 2",
                         "remove-blob hello 2"],
     {"copy-snap-data": U, "link-snap": E, "start-snap-services": H}),
    (("start-snap-services:do",), ["fetch hello 2", "mount hello 2", *INSTALLED, "copy-data hello 1>2",
                                   "link hello 2", "unlink hello", "undo-copy-data hello 2", "link hello 1",
                                   "start hello 1 svc", "unmount hello 2", "remove-blob hello 2"],
     {"link-snap": U, "start-snap-services": E, "cleanup": H}),
    # revision 1 could not be linked again: its services are not started on an unlinked revision
    (("start-snap-services:do", "unlink-current-snap:undo"),
     ["fetch hello 2", "mount hello 2", *INSTALLED, "copy-data hello 1>2", "link hello 2", "unlink hello",
      "undo-copy-data hello 2", "unmount hello 2", "remove-blob hello 2"],
     {"unlink-current-snap": E, "stop-snap-services": U, "link-snap": U}),
]


@pytest.mark.parametrize(("failures", "expected_ops", "statuses"), REFRESH,
                         ids=[line_id(line[0]) for line in REFRESH])
def test_refresh_failure_table(s: System, failures: tuple[str, ...], expected_ops: list[str],
                               statuses: dict[str, Status]) -> None:
    s.run(lambda sm: sm.install("hello"))
    s.publish("hello", "2.0")
    before = tree(s.root)
    state_before = s.snaps_state()
    cid, ops = _run(s, failures, lambda sm: sm.refresh("hello"))
    assert ops == [*expected_ops, READY_REFRESH]
    got = first_of_each(s.tasks(cid))
    assert {k: got[k] for k in statuses} == statuses
    _check_rules(s, cid, failures)
    if not any(f.endswith(":undo") for f in failures):
        # revision 1 is back as it was: files, current link, state (the service runs again)
        assert tree(s.root) == before
        assert s.snaps_state() == state_before
