# SPDX-License-Identifier: GPL-3.0-or-later
"""Upgrades of real databases written by earlier revisions: tests/fixtures/databases/.

Every schema revision has a fixture made by the engine of the commit that
added it (tests/fixtures/make_database.py, which also stored what the public
API read from it and what running it to the end gave). A copy of each is
opened through the normal path, upgraded to head, read back, run to the end
and compared with a fresh schema. The one-step downgrades are in
test_migrations.py; kills during an upgrade in test_crash.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine import Overlord, State
from engine.db import SCHEMA_HEAD
from tests.fixtures.make_database import (
    COMMAND,
    DATABASES,
    FORMAT,
    KINDS,
    UNKNOWN_KINDS,
    VOCABULARY,
    FixedClock,
    FixtureError,
    close,
    compare,
    describe,
    finish,
    fixture_path,
    fixture_revisions,
    generate,
    load_description,
    load_manifest,
    make,
    missing,
    next_ids,
    outcome,
    register_handlers,
    schema_revision,
)
from tests.support.schema import REPO, check, normalised_schema, revision_of, revisions

FIXTURES = fixture_revisions()
MAX_BYTES = 1024 * 1024


def test_every_revision_has_a_fixture() -> None:
    known = [s.revision for s in revisions()]
    manifest = load_manifest()
    problems = [missing(r) for r in known
                if not fixture_path(r).exists() or not (DATABASES / f"{r}.json").exists() or r not in manifest]
    problems += [f"tests/fixtures/databases/{r}.db is the fixture of {r}, which no migration defines"
                 for r in FIXTURES if r not in known]
    problems += [f"MANIFEST.json names {r}, which has no fixture database" for r in manifest if r not in FIXTURES]
    assert not problems, "\n".join(problems)


def test_a_missing_fixture_names_the_command_to_run() -> None:
    message = missing("0099_example")
    assert "0099_example" in message
    assert f"`{COMMAND}`" in message and COMMAND == ".venv/bin/python -m tests.fixtures.make_database"
    assert "docs/schema.md" in message
    assert COMMAND.split()[-1] in (REPO / "docs" / "schema.md").read_text()


@pytest.mark.parametrize("revision", FIXTURES)
def test_fixture_is_as_made(revision: str) -> None:
    """The file is the one the manifest describes, made by a commit, small, at its revision, untouched."""
    db = fixture_path(revision)
    entry = load_manifest()[revision]
    assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"]), entry
    assert sorted(entry["trees"]) == ["engine", "migrations"]
    assert all(re.fullmatch(r"[0-9a-f]{40}", tree) for tree in entry["trees"].values()), entry
    assert entry["command"] == f"{COMMAND} --commit {entry['commit']}"
    assert db.stat().st_size == entry["bytes"] < MAX_BYTES
    assert hashlib.sha256(db.read_bytes()).hexdigest() == entry["sha256"], \
        f"{db} changed since it was made (open copies of fixtures, never the files)"
    assert schema_revision(db) == revision
    assert not list(DATABASES.glob(f"{revision}.db-*")), "a -wal or -shm file beside the fixture"
    stored = load_description(revision)
    assert (stored["format"], stored["revision"]) == (FORMAT, revision)
    # It holds what it should: every status, for changes and for tasks.
    before = stored["before"]
    statuses = {"Do", "Doing", "Done", "Abort", "Undo", "Undoing", "Undone", "Hold", "Error", "Wait"}
    assert {c["status"] for c in before["changes"]} == statuses
    assert {t["status"] for t in before["tasks"]} == statuses
    assert {t["kind"] for t in before["tasks"]} >= set(stored["unknown_kinds"])


def _unknown(description: dict[str, Any], kinds: list[str]) -> dict[str, Any]:
    return {t["id"]: t for t in description["tasks"] if t["kind"] in kinds}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("revision", FIXTURES)
def test_fixture_upgrades_to_head_reads_back_and_runs_to_the_end(revision: str, tmp_path: Path) -> None:
    stored = load_description(revision)
    db = tmp_path / "state.db"
    shutil.copyfile(fixture_path(revision), db)
    clock = FixedClock(datetime.fromisoformat(stored["clock"]))
    o = Overlord(db, clock=clock)  # the normal open path: upgrades to head
    try:
        assert revision_of(db) == [SCHEMA_HEAD]
        register_handlers(o.task_runner)
        assert set(stored["kinds"]) <= set(KINDS), "a kind of the fixture lost its handler"
        now = describe(o.state, stored["vocabulary"])
        assert compare(stored["before"], now) == []

        finish(o, clock, datetime.fromisoformat(stored["after"]["clock"]))
        after = describe(o.state, stored["vocabulary"])
        assert compare(stored["after"]["outcome"], outcome(after)) == []
        # Tasks of unknown kinds, and the tasks waiting for them, stay as they were.
        was = _unknown(stored["before"], stored["unknown_kinds"])
        assert was
        assert compare(was, _unknown(after, stored["unknown_kinds"])) == []
        stuck = sorted({t["change"] for t in was.values()}, key=int)
        assert [c["id"] for c in after["changes"] if c["tasks"] and not c["ready"]] == stuck
        # The sequences go on where they were: ids are never reused.
        assert next_ids(o.state) == stored["next_ids"]
    finally:
        close(o)
    # The upgraded schema is the fresh one (procrastinate's migrated-equals-fresh).
    check(db)
    fresh = tmp_path / "fresh.db"
    State.open(fresh).close()
    assert normalised_schema(db) == normalised_schema(fresh)


def _without_timings(description: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(description)
    out: dict[str, Any] = json.loads(text)
    for t in out["before"]["tasks"]:
        t.pop("doing_time")
        t.pop("undoing_time")
    return out


@pytest.mark.timeout(300)
def test_the_fixture_script_runs_with_this_engine_and_is_deterministic(tmp_path: Path) -> None:
    """The script still works with today's engine (the next revision needs it) and makes the same content."""
    a = generate(tmp_path / "a")
    b = generate(tmp_path / "b")
    assert a["revision"] == SCHEMA_HEAD
    assert a["vocabulary"] == VOCABULARY and a["unknown_kinds"] == list(UNKNOWN_KINDS)
    assert _without_timings(a) == _without_timings(b)
    assert (tmp_path / "a" / "state.db").stat().st_size < MAX_BYTES


@pytest.mark.timeout(300)
def test_the_command_exports_a_commit_and_records_it(tmp_path: Path) -> None:
    """make_database's own path: git archive of a commit, the child with that engine, the manifest."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: make_database exports commits with git")
    head = make("HEAD", into=tmp_path, require_clean=False)
    entry = load_manifest(tmp_path)[head]
    db = tmp_path / f"{head}.db"
    assert schema_revision(db) == head
    assert entry["command"] == f"{COMMAND} --commit {entry['commit']}"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == entry["sha256"]
    assert json.loads((tmp_path / f"{head}.json").read_text())["revision"] == head
    # A fixture made once is kept.
    with pytest.raises(FixtureError, match="exists"):
        make("HEAD", into=tmp_path, require_clean=False)
