# SPDX-License-Identifier: GPL-3.0-or-later
"""StateMaking: how a State makes changes and finds them by key: idempotency keys, affected keys, conflicts.

A part of engine.state.State (the members that make and select changes),
kept in its own module. docs/requests.md tells the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _time
from ._records import ChangeRec
from ._values import check_name, clean_text
from .change import change_handle
from .errors import ChangeConflictError, NotFoundError
from .keys import KEY_RETENTION, check_change_key, check_keys
from .repair import select_changes
from .status import Status

if TYPE_CHECKING:
    from .change import Change
    from .unitofwork import UnitOfWork

log = logging.getLogger("engine.state")


class StateMaking:
    """StateMaking is how a State makes and selects changes (engine.state.State inherits it)."""

    _uow: UnitOfWork

    if TYPE_CHECKING:
        def _check(self) -> None: ...

        def _now(self) -> datetime: ...

        def changes(self) -> list[Change]: ...

    def new_change(self, kind: str, summary: str, *, key: str | None = None,
                   key_retention: float | timedelta | None = None, affects: Iterable[str] = (),
                   on_conflict: str = "refuse") -> Change:
        """new_change creates a change with no tasks.

        kind is a str of valid Unicode; summary is text for people (lone
        surrogates in it are stored escaped).

        key makes the request idempotent: while the key lasts (key_retention,
        default KEY_RETENTION, 24 hours, unless the change is pruned first) a
        new_change with the same key returns the change it made, on every
        host sharing the database (chg.is_new is False then; a key of a
        change of another kind raises ChangeConflictError).

        affects names what the change affects ("snap:hello"); when unready
        changes affect some of it, on_conflict "refuse" raises
        ChangeConflictError (nothing is made) and "queue" makes the change,
        whose tasks wait until no older unready change affects its keys.
        """
        self._check()
        check_name(kind, "change kind")
        summary = clean_text(summary, "change summary")
        if on_conflict not in ("refuse", "queue"):
            raise ValueError(f"cannot make a change: on_conflict must be 'refuse' or 'queue', not {on_conflict!r}")
        uow = self._uow
        keys = uow.keys
        affected = check_keys(affects, "affected key")
        if key is not None:
            key = check_change_key(key, "change key")
            retention = KEY_RETENTION.total_seconds() if key_retention is None else \
                _time.seconds(key_retention, "key_retention")
            found = keys.find(key)
            if found is not None:
                existing = self._keyed(found, key, kind)
                if existing is not None:
                    return existing
        queued = False
        if affected:
            conflicts = self._unready_affecting(affected)
            if conflicts and on_conflict == "refuse":
                cid = min(conflicts)
                other = change_handle(uow, uow.records.crec(cid))
                subject = conflicts[cid][0]
                raise ChangeConflictError(other.id, f"cannot start a {kind} change: change {other.id} "
                                                    f"({other.kind}) is in progress for {subject}",
                                          change_kind=other.kind, subject=subject)
            queued = bool(conflicts)
        cid = uow.next_id("change")
        if key is not None:
            other_cid = keys.claim(key, cid, retention)
            while other_cid is not None:  # another request (another host) made it first
                existing = self._keyed(other_cid, key, kind)
                if existing is not None:
                    return existing
                other_cid = keys.claim(key, cid, retention, take_over=True)
        rec = ChangeRec(cid, kind, summary, uow.now())
        uow.add_change(rec)
        keys.made.add(cid)
        keys.made.take()
        if affected:
            keys.affect(cid, affected, queued)
            if queued:
                log.info("change %s (%s) waits for changes %s affecting %s", cid, kind,
                         ", ".join(map(str, sorted(conflicts))), ", ".join(affected))
        return change_handle(uow, rec)

    def _keyed(self, cid: int, key: str, kind: str) -> Change | None:
        """_keyed is the change an idempotency key names (None: it is gone, the key may be taken over)."""
        uow = self._uow
        try:
            chg = change_handle(uow, uow.records.crec(cid))
        except NotFoundError:
            log.warning("change key %r names change %s, which is gone: a new change takes it", key, cid)
            return None
        if chg.kind != kind:
            raise ChangeConflictError(chg.id, f"cannot make a {kind} change with key {key!r}: it names change "
                                              f"{chg.id} ({chg.kind})", change_kind=chg.kind, subject=key)
        log.debug("change key %r names change %s: returning it", key, cid)
        return chg

    def claim_change_key(self, key: str, chg: Change, *, key_retention: float | timedelta | None = None) -> Change:
        """claim_change_key makes an idempotency key name chg, a change made in this unit of work without one.

        It is new_change's claim, for a caller whose change is made by code
        that takes no key (a manager's verb): one INSERT ... ON CONFLICT, so
        that two hosts racing on a key keep one change between them. It
        returns chg, or the change the key names already: then another
        request made it first, and the caller should roll back (raise out of
        the lock's block) and return that change.
        """
        self._check()
        key = check_change_key(key, "change key")
        retention = KEY_RETENTION.total_seconds() if key_retention is None else \
            _time.seconds(key_retention, "key_retention")
        uow = self._uow
        cid = int(chg.id)
        other = uow.keys.claim(key, cid, retention)
        while other is not None and other != cid:
            try:
                return change_handle(uow, uow.records.crec(other))
            except NotFoundError:  # its change is gone: the key is free
                other = uow.keys.claim(key, cid, retention, take_over=True)
        return chg

    def change_by_key(self, key: str) -> Change | None:
        """change_by_key returns the change an unexpired idempotency key names, or None."""
        self._check()
        key = check_change_key(key, "change key")
        return self._change_by_id(self._uow.keys.find(key))

    def _change_by_id(self, cid: int | None) -> Change | None:
        """_change_by_id is the handle of change cid, or None (no id, or no such change)."""
        if cid is None:
            return None
        try:
            return change_handle(self._uow, self._uow.records.crec(cid))
        except NotFoundError:
            return None

    def affecting(self, keys: Iterable[str] | str, *, ignore: Change | str | None = None) -> list[Change]:
        """affecting returns the unready changes that affect any of keys, oldest first (one indexed query).

        ignore leaves one change out (the one asking, say).
        """
        self._check()
        wanted = check_keys(keys, "affected key")
        uow = self._uow
        skip = str(ignore.id if ignore is not None and not isinstance(ignore, str) else ignore)
        return [change_handle(uow, uow.records.crec(cid)) for cid in sorted(self._unready_affecting(wanted))
                if str(cid) != skip]

    def select_changes(self, *, status: Status | str | Iterable[Status | str] | None = None,
                       kind: str | Iterable[str] | None = None, before: datetime | None = None,
                       older_than: float | timedelta | None = None,
                       label: tuple[str, Any] | None = None) -> list[Change]:
        """select_changes returns the changes in any of the statuses, of any of the kinds, spawned before a
        time (or older_than a duration, by the State's clock), and whose data holds label[1] under key
        label[0]; oldest first (None: any). Act on them in the same unit of work (chg.abort(), chg.retry())
        for one transaction."""
        self._check()
        when = None if before is None else _time.utc(before, "before")
        if older_than is not None:
            age = self._now() - timedelta(seconds=_time.seconds(older_than, "older_than"))
            when = age if when is None else min(when, age)
        return select_changes(self._uow, self.changes(), status=status, kind=kind, before=when, label=label)

    def _unready_affecting(self, keys: list[str]) -> dict[int, list[str]]:
        """_unready_affecting maps the unready changes affecting some of keys to those keys."""
        uow = self._uow
        out = {}
        for cid, found in uow.keys.unready_affecting(keys).items():
            try:
                ready = change_handle(uow, uow.records.crec(cid)).is_ready()
            except NotFoundError:
                continue
            if not ready:  # the stored status may lag a change moved in this unit of work
                out[cid] = found
        return out
