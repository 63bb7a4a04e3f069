# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/snaps: the installed snaps, and the changes that install, refresh, revert, enable, disable, remove them.

Shapes follow snapd's daemon/api_snaps.go and client/packages.go: a snap is
``{"id", "name", "version", "revision", "summary", "description",
"publisher", "developer", "status", "type", "installed-size", "apps",
"mounted-from", ...}``; an action answers async with the change id. A
request's body is read once, its fields checked as they are read (Body),
into a SnapAction, which ChangeRequest.run makes the change of. The
verbs are the snap manager's (docs/managers.md); each runs under the state
lock and only builds the change, which the overlord's loop then runs. What
install and refresh need of the store is read before the lock is taken
(SnapManager.with_store_answers), and an uploaded snap file is checked whole
before it: the lock is held only to decide and record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import EngineError

from . import response
from .api import ApiRequest, Context, Endpoint
from .api_changes import API_DATA_KEY
from .errors import ApiError, ErrorKind, bad_request, from_exception, shown
from .system import system_overlord
from .upload import PARTIAL, Upload

if TYPE_CHECKING:
    from engine import Change, State
    from managers.snap import SnapInfo
    from managers.snapstate import SnapManager, SnapState
    from managers.snapstate.lookup import StoreAnswers
    from managers.snapstore import StoreSnap

    from .idempotency import ChangeRequest

log = logging.getLogger("overlord.daemon")

#: REVISION is what a revision looks like (snapd's): a store revision N or a local one xN, N positive and 64-bit.
REVISION = re.compile(r"^x?[1-9][0-9]{0,18}\Z")  # (\Z: $ would match before a final line break)
REVISION_MAX = 2**63 - 1
#: A_REVISION is what the error for a field that is not a revision says it must be.
A_REVISION = f"a revision (a number from 1 to {REVISION_MAX}, or x and one for a local revision)"
#: WAIT is the field that makes a change wait for the changes in progress on its snaps instead of being refused
#: (SnapManager's on_conflict="queue"; `overlord install --wait-for-conflicts`).
WAIT = "wait-for-conflicts"
#: OPTIONS are the actions of POST /v2/snaps/{name} and the body fields each takes besides "action";
#: MANY_OPTIONS those of POST /v2/snaps, for several snaps.
OPTIONS: dict[str, tuple[str, ...]] = {"install": ("channel", "revision", WAIT),
                                       "refresh": ("channel", "revision", WAIT), "remove": ("revision", WAIT),
                                       "revert": ("revision", WAIT), "enable": (WAIT,), "disable": (WAIT,),
                                       "switch": ("channel", WAIT)}
MANY_OPTIONS: dict[str, tuple[str, ...]] = {"install": ("snaps", WAIT), "refresh": ("snaps", WAIT),
                                            "remove": ("snaps", WAIT), "hold": ("snaps", "time"),
                                            "unhold": ("snaps",)}


def publisher(ctx: Context, publisher_id: str) -> dict[str, Any] | None:
    """publisher is snapd's StoreAccount of a publisher, from its account assertion when there is one."""
    if not publisher_id:
        return None
    out: dict[str, Any] = {"id": publisher_id, "username": publisher_id}
    am = getattr(ctx.overlord, "assert_manager", None)
    account = am.get("account", (publisher_id,)) if am is not None else None
    if account is not None:
        out["display-name"] = account.header("display-name")
        out["validation"] = account.header("validation") or "unproven"
    return out


def store_snap(ctx: Context, ss: StoreSnap, channel: str, publisher_id: str) -> dict[str, Any]:
    """store_snap is the JSON of one store revision (its "publisher" is filled in under the lock)."""
    return {"id": ss.snap_id, "name": ss.name, "version": ss.version, "revision": ss.revision,
            "channel": channel, "summary": ss.summary, "description": ss.description,
            "publisher": None, "developer": publisher_id, "download-size": ss.size, "type": "app"}


def store_listing(ctx: Context, name: str) -> dict[str, Any]:
    """store_listing is a store snap as find and info show it: what stable (or the newest) offers, and per
    channel the revision, version and size (snapd's "channels" map), without the default track's prefix."""
    from managers.snapstore import RISKS, short_channel

    store = system_overlord(ctx).snap_manager.snap_store
    assert store is not None
    listing = store.listing(name)
    shown = store.snap(name, listing.revisions[0])
    default = store.channel_revision(name, "stable")
    if default is not None:
        shown = store.snap(name, default)
    decl = store.declaration(name)
    publisher = decl.header("publisher-id") if decl is not None else ""
    out = store_snap(ctx, shown, "stable" if default is not None else "", publisher)
    channels: dict[str, Any] = {}
    for track in sorted({c.split("/")[0] for c in listing.channels} | {"latest"}):
        for risk in RISKS:
            rev = store.channel_revision(name, f"{track}/{risk}")
            if rev is not None:
                ss = store.snap(name, rev)
                channels[short_channel(f"{track}/{risk}")] = {"revision": rev, "version": ss.version,
                                                               "size": ss.size}
    out["channels"] = channels
    return out


def snap_info(ctx: Context, snapst: SnapState, info: SnapInfo) -> dict[str, Any]:
    """snap_info is the JSON of one installed revision of a snap (call with the lock held)."""
    sm = system_overlord(ctx).snap_manager
    current = info.revision == snapst.current
    return {
        "id": info.snap_id,
        "name": info.name,
        "summary": info.summary,
        "description": info.description,
        "version": info.version,
        "revision": info.revision,
        "publisher": publisher(ctx, info.publisher_id),
        "developer": info.publisher_id,
        "status": "active" if current and snapst.active else "installed",
        # snapd's tracking-channel: what refresh follows ("" for a snap from a local file)
        "tracking-channel": snapst.tracking,
        **({"hold": hold} if (hold := _held(ctx, snapst.name)) else {}),
        "current": current,
        "type": "app",
        "confinement": "strict",
        # A local revision (x1, x2...) was installed from a file without assertions.
        "dangerous": info.revision.startswith("x"),
        "installed-size": info.size,
        "mounted-from": str(sm.backend.blob(info.name, info.revision)),
        "apps": [{"snap": info.name, "name": app.name, **({"daemon": app.daemon} if app.daemon else {})}
                 for _, app in sorted(info.apps.items())],
    }


def _held(ctx: Context, name: str) -> str | None:
    """_held is until when the snap's auto-refresh is held (RFC 3339 or "forever"), or None (lock held)."""
    held: dict[str, str] = system_overlord(ctx).snap_manager.auto_refresh.info(ctx.state).get("held-snaps", {})
    return held.get(name)


def _check_name(name: str) -> str:
    from managers.snap import valid_snap_name

    if not valid_snap_name(name):
        raise bad_request(f"invalid snap name {shown(name)}: 2 to 40 of a-z, 0-9 and -, with a letter")
    return name


def get_snaps(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_snaps lists the installed snaps (their current revisions; select=all: every installed revision)."""
    select = req.choice("select", ("enabled", "all"), "enabled")
    wanted = [n for n in (req.query.get("snaps") or "").split(",") if n]
    st = ctx.state
    with st:
        out: list[dict[str, Any]] = []
        for snapst in system_overlord(ctx).snap_manager.snaps():
            if wanted and snapst.name not in wanted:
                continue
            infos = snapst.sequence if select == "all" else [snapst.info]
            out.extend(snap_info(ctx, snapst, info) for info in infos)
    return response.sync(out)


def get_snap(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_snap shows one installed snap; 404 snap-not-found when it is not installed.

    A store snap also gets "channels" (per channel: revision, version, size) from the store, read after the
    lock is released; a store that cannot be read leaves the field out.
    """
    name = req.path_params["name"]
    sm = system_overlord(ctx).snap_manager
    with ctx.state:
        snapst = sm.info_or_none(name)
        if snapst is None:
            raise ApiError(404, ErrorKind.SNAP_NOT_FOUND, f"cannot find snap {shown(name)}: it is not installed")
        out = snap_info(ctx, snapst, snapst.info)
    if out["id"] and sm.snap_store is not None:
        try:
            out["channels"] = store_listing(ctx, name)["channels"]
        except EngineError as e:
            log.info("snap %r: the store's channels are not shown: %s", name, e)
    return response.sync(out)


def _is_revision(text: str) -> bool:
    """_is_revision says whether text is a revision (REVISION, at most REVISION_MAX)."""
    return bool(REVISION.match(text)) and int(text.lstrip("x")) <= REVISION_MAX


@dataclass(frozen=True)
class SnapAction:
    """SnapAction is what POST /v2/snaps/{name} or POST /v2/snaps asks, read once from the request: an action
    on snaps (refresh of none: of every snap), the revision and channel it wants, and whether it waits for the
    changes in progress on its snaps instead of being refused (WAIT). many: asked of POST /v2/snaps, whose
    change keeps its snaps as API data and whose answer names them.

    Its methods are what ChangeRequest.run takes: the store read without the lock, the verb, the answer.
    """

    action: str
    names: tuple[str, ...]
    revision: str | None = None
    channel: str | None = None
    wait: bool = False
    many: bool = False

    @property
    def meaning(self) -> dict[str, Any]:
        """meaning is what the action asks, for the Idempotency-Key's digest: the same on either endpoint."""
        return {"snaps": sorted(set(self.names)), "revision": self.revision, "channel": self.channel}

    @property
    def on_conflict(self) -> str:
        """on_conflict is what the snap manager does when changes in progress affect the snaps (SnapManager)."""
        return "queue" if self.wait else "refuse"

    def with_store_answers(self, sm: SnapManager, key: str | None,
                           attempt: Callable[[StoreAnswers | None], response.Reply]) -> response.Reply:
        """with_store_answers reads what the action needs of the store without the lock, then answers
        attempt(found) with the lock held (SnapManager.with_store_answers; key: the request's)."""
        names = list(self.names)
        return sm.with_store_answers(self.action, (names or None) if self.action == "refresh" else names, attempt,
                                     channel=self.channel, revision=self.revision, key=key,
                                     on_conflict=self.on_conflict)

    def make(self, sm: SnapManager, found: StoreAnswers | None) -> Change:
        """make calls the snap manager's verb (lock held) with what the store said (found)."""
        names, channel, revision, c = list(self.names), self.channel, self.revision, self.on_conflict
        verbs: dict[str, Callable[[], Change]] = {
            "install": lambda: sm.install(names, channel=channel, revision=revision, on_conflict=c, found=found),
            "refresh": lambda: sm.refresh(names or None, channel=channel, revision=revision, on_conflict=c,
                                          found=found),
            "switch": lambda: sm.switch(names[0], channel or "", on_conflict=c),
            "remove": lambda: sm.remove(names, revision=revision, on_conflict=c),
            "revert": lambda: sm.revert(names[0], revision=revision, on_conflict=c),
            "enable": lambda: sm.enable(names[0], on_conflict=c),
            "disable": lambda: sm.disable(names[0], on_conflict=c),
        }
        chg = verbs[self.action]()
        if self.many:
            chg.set(API_DATA_KEY, {"snap-names": list(chg.get("snap-names", []))})
        return chg

    def reply(self, chg: Change) -> response.Reply:
        """reply is the answer to the request that asked for chg (lock held)."""
        if self.many:
            return response.async_(chg.id, {"snap-names": list(chg.get("snap-names", []))})
        return response.async_(chg.id)


def post_snap(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_snap acts on one snap: {"action": install|refresh|remove|revert|enable|disable|switch, "revision"?,
    "channel"?} (install and refresh take both, remove and revert a revision, switch a channel).

    The snap manager reads the store first, without the lock, then takes it to decide and record; a retried
    request gets the change its key names (ChangeRequest.run).
    """
    name = _check_name(req.path_params["name"])
    body = req.json()
    asked = SnapAction(body.action(OPTIONS), (name,),
                       revision=body.text("revision", valid=_is_revision, what=A_REVISION, numbers=True),
                       channel=body.text("channel", needed_by=("switch",)), wait=body.flag(WAIT))
    sm = system_overlord(ctx).snap_manager
    cr: ChangeRequest = req.change_request(asked.action, asked.meaning)
    return cr.run(ctx.state, lambda found: asked.make(sm, found), asked.reply,
                  locked=lambda key, attempt: asked.with_store_answers(sm, key, attempt))


def post_snaps(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_snaps acts on several snaps in one change: {"action": install|refresh|remove, "snaps": [...]}, as
    post_snap does on one; hold and unhold the auto-refresh of snaps (_hold).

    refresh with no snaps refreshes every snap the store has a newer revision of. (A multipart/form-data
    body, a snap file to install, goes to sideload instead.)
    """
    body = req.json()
    action = body.action(MANY_OPTIONS)
    names = [_check_name(n) for n in body.str_list("snaps", required=action in ("install", "remove"))]
    if action in ("hold", "unhold"):
        return _hold(ctx, action, names, body.value.get("time"))
    if not names and action != "refresh":
        raise bad_request(f"cannot {action} no snaps: field 'snaps' is empty")
    asked = SnapAction(action, tuple(names), wait=body.flag(WAIT), many=True)
    sm = system_overlord(ctx).snap_manager
    cr: ChangeRequest = req.change_request(asked.action, asked.meaning)
    return cr.run(ctx.state, lambda found: asked.make(sm, found), asked.reply,
                  locked=lambda key, attempt: asked.with_store_answers(sm, key, attempt))


def _hold(ctx: Context, action: str, names: list[str], until: Any) -> response.Reply:
    """_hold holds (until: RFC 3339 or "forever") or unholds the auto-refresh of snaps (none: of every snap, the
    system-wide hold); sync, like snapd's."""
    st = ctx.state
    with st:
        ar = system_overlord(ctx).snap_manager.auto_refresh
        if action == "hold":
            if not isinstance(until, str) or not until:
                raise bad_request("cannot hold: field 'time' must be an RFC 3339 time or \"forever\"")
            ar.hold(st, names, until)
        else:
            ar.unhold(st, names)
        info = ar.info(st)
    return response.sync(info)


def _referenced_files(st: State) -> set[str]:
    """_referenced_files are the local snap files that unready changes will still read (lock held)."""
    paths = set()
    for chg in st.changes():
        if chg.is_ready():
            continue
        for t in chg.tasks():
            setup = t.get("snap-setup", None)
            if isinstance(setup, dict) and setup.get("path"):
                paths.add(str(setup["path"]))
    return paths


def sweep_uploads(st: State, directory: Path, *, partial: bool) -> None:
    """sweep_uploads deletes the uploads no unready change needs (lock held): those of failed changes, and with
    partial=True (at start, when nothing is being received) the leftovers of interrupted uploads.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    keep = _referenced_files(st)
    for name in names:
        path = directory / name
        if str(path) in keep or (name.endswith(PARTIAL) and not partial):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info("removed upload %s: no change needs it", path)


def _flag(upload: Upload, name: str) -> bool:
    value = upload.fields.get(name, "false")
    if value not in ("true", "false"):
        raise bad_request(f"cannot read upload: field {shown(name)} must be true or false, not {shown(value)}")
    return value == "true"


def sideload(ctx: Context, req: ApiRequest) -> response.Reply:
    """sideload installs an uploaded snap file (POST /v2/snaps with a multipart/form-data body: the fields
    "snap", the file, and "dangerous": true|false)."""
    upload = req.upload
    assert upload is not None  # the upload handler of its Endpoint
    for name in upload.fields:
        if name not in ("dangerous",):
            raise bad_request(f"cannot read upload: field {shown(name)} is not an option of install")
    files = [f for f in upload.files if f.field == "snap"]
    if len(files) != 1 or len(upload.files) != 1:
        raise bad_request("cannot read upload: it must hold one file, in the field 'snap'")
    dangerous = _flag(upload, "dangerous")
    received = files[0]
    def named(e: EngineError, *paths: Path) -> ApiError:
        err = from_exception(e)
        if err is None:
            raise e
        for path in paths:  # it names the file received: name the one uploaded instead
            err.message = err.message.replace(str(path), f"uploaded file {received.filename!r}")
        return err

    sm = system_overlord(ctx).snap_manager
    st = ctx.state
    # The same bytes with the same options ask the same: a retried upload gets the first one's change (the
    # file received again is deleted with the request), looked up before the file is checked.
    cr = req.change_request("install", {"file-sha256": received.sha256(), "dangerous": dangerous})

    def reply(chg: Change) -> response.Reply:
        return response.async_(chg.id, {"snap-names": list(chg.get("snap-names", []))})

    with st:
        found = cr.existing(st)
        if found is not None:
            return reply(found)
    # The archive is checked whole and hashed before the lock is taken (it may be large, or hostile): the
    # lock is held only to record the change. The file keeps its partial name meanwhile, so that no sweep
    # of another request deletes it.
    try:
        checked = sm.check_file(received.path)
    except EngineError as e:
        raise named(e, received.path) from None

    paths = [received.path]

    def make() -> Change:
        assert ctx.upload_dir is not None
        sweep_uploads(st, ctx.upload_dir, partial=False)
        if received.path.name.endswith(PARTIAL):  # not yet renamed (by an earlier round of cr.run)
            final = received.path.with_name(received.path.name.removesuffix(PARTIAL) + ".snap")
            os.rename(received.path, final)
            received.path = final
            paths.insert(0, final)
        try:
            chg = sm.install_path(received.path, dangerous=dangerous, remove_path=True, filename=received.filename,
                                  checked=checked)
        except EngineError as e:
            raise named(e, *paths) from None
        chg.set(API_DATA_KEY, {"snap-names": list(chg.get("snap-names", [])), "file": received.filename})
        log.info("installing uploaded snap file %s (%d bytes) as %s: change %s", received.filename, received.size,
                 received.path.name, chg.id)
        return chg

    answer = cr.run(st, make, reply)
    # The change deletes it at its cleanup. (A change rolled back because another daemon's request took the
    # key leaves it to the next upload's sweep: no unready change names it.)
    received.kept = received.path.name.endswith(".snap")
    return answer


ENDPOINTS = [
    Endpoint("/v2/snaps", get=get_snaps, post=post_snaps, upload=sideload),
    Endpoint("/v2/snaps/{name}", get=get_snap, post=post_snap),
]
