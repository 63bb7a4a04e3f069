# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord install/remove/refresh/revert/enable/disable SNAP...` and `overlord list` (snapd's cmd_snap_op.go,
cmd_list.go).

Each verb asks the daemon for a change, then follows it with the live
display of `watch` until it is ready and says what was done, as snap does
("hello 1.0 from ACME Corp (acme) installed"); with --no-wait it prints the
change id and returns at once. A conflict with a change in progress exits
EXIT_CONFLICT (10), a change that ends other than Done exits 1 with its
error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..client import ApiError, Client
from ._client import json_option, session, state_dir_option
from ._group import cli
from ._output import fail, one_line, out, plain, print_json
from .cmd_watch import check_done, watch_change

no_wait_option = click.option("--no-wait", is_flag=True,
                              help="Print the change id and return at once instead of waiting for it.")
wait_conflicts_option = click.option(
    "--wait-for-conflicts", "wait", is_flag=True,
    help="When another change is in progress on the snaps, queue this one behind it instead of failing "
         "(its checks are made when its turn comes).")


def is_file_arg(arg: str) -> bool:
    """is_file_arg says whether an `install` argument names a snap file rather than a snap (names hold no / or .)."""
    return "/" in arg or "." in arg


def publisher_text(snap: dict[str, Any]) -> str:
    """publisher_text names a snap's publisher as snap does: "ACME Corp (acme)", or its id, or "-"."""
    pub = snap.get("publisher") or {}
    pid = pub.get("username") or pub.get("id")
    if not pid:
        return "-"
    shown = pub.get("display-name")
    return f"{shown} ({pid})" if shown and shown.lower() != str(pid).lower() else str(pid)


def outcome(op: str, snap: dict[str, Any]) -> Text:
    """outcome is snap's line telling what an operation did to a snap ("hello 2.0 from acme refreshed")."""
    name, version = snap["name"], snap["version"]
    if op in ("install", "refresh"):
        done = "installed" if op == "install" else "refreshed"
        pub = publisher_text(snap)
        tracking = _short(snap.get("tracking-channel") or "")
        if tracking and tracking != "stable":
            name = f"{name} ({tracking})"  # snap's way: hello (beta) 2.0 from ACME Corp (acme) installed
        return plain(f"{name} {version} from {pub} {done}" if pub != "-" else f"{name} {version} {done}")
    if op == "revert":
        return plain(f"{name} reverted to {version}")
    if op == "switch":
        return plain(f'"{name}" switched to the "{_short(snap.get("tracking-channel", ""))}" channel')
    return plain(f"{name} {op}d")


def _run(state_dir: Path | None, op: str, no_wait: bool, ask: Callable[[Client], tuple[str, list[str]]],
         revision: str | None = None, up_to_date: str | None = None, what: Sequence[str] = ()) -> None:
    """_run asks for the change, then waits for it and tells the outcome (or prints its id with --no-wait).

    When a refresh finds nothing newer, it says so on stderr (up_to_date, else the daemon's words) and succeeds.
    what names the snaps (or file) for an error that does not say what could not be done.
    """
    doing = op if not what else f"{op} {'snap' if len(what) == 1 else 'snaps'} " + ", ".join(repr(w) for w in what)
    with session(state_dir, doing) as c:
        try:
            change_id, names = ask(c)
        except ApiError as e:
            if e.kind == "snap-no-update-available":
                click.echo(up_to_date or one_line(e.message), err=True)
                return
            raise
        if no_wait:
            click.echo(change_id)
            return
        final = watch_change(c, change_id)
        check_done(final)
        if final.get("kind") == "switch-snap-channel":
            op = "switch"  # a refresh --channel with nothing newer only switched
        if op == "remove":
            # A revision's removal leaves the snap installed, unless it was the only one: then the snap is gone.
            left = {s["name"] for s in c.snaps(names=names)} if revision else set()
            for name in names:
                out().print(plain(f"{name} (revision {revision}) removed" if name in left else f"{name} removed"),
                            soft_wrap=True)
            return
        for snap in c.snaps(names=names):
            if snap["name"] in names:
                out().print(outcome(op, snap), soft_wrap=True)


def _one_or_many(op: str, names: tuple[str, ...], wait: bool = False,
                 **options: Any) -> Callable[[Client], tuple[str, list[str]]]:
    def ask(c: Client) -> tuple[str, list[str]]:
        if len(names) == 1:
            return c.snap_action(names[0], op, wait_for_conflicts=wait or None, **options), list(names)
        return c.snaps_action(op, list(names), wait_for_conflicts=wait or None)
    return ask


channel_option = click.option("--channel", default=None, metavar="CHANNEL",
                              help="The channel to track: stable, candidate, beta or edge, optionally after TRACK/.")


def _single(op: str, snaps: tuple[str, ...], channel: str | None, revision: str | None) -> None:
    if (channel is not None or revision is not None) and len(snaps) != 1:
        raise click.UsageError(f"--channel and --revision {op} one snap: name exactly one")


@cli.command()
@click.argument("snaps", nargs=-1, required=True, metavar="SNAP|FILE...")
@click.option("--dangerous", is_flag=True, help="Install a snap file even without assertions (a local revision).")
@channel_option
@click.option("--revision", default=None, help="Install this revision instead of the one the channel offers.")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def install(snaps: tuple[str, ...], dangerous: bool, channel: str | None, revision: str | None, no_wait: bool,
            wait: bool, state_dir: Path | None) -> None:
    """Install snaps from the store (tracking a channel, stable by default), or one snap file (a path:
    ./hello_1.0.snap) uploaded to the daemon."""
    files = [s for s in snaps if is_file_arg(s)]
    if files:
        if channel is not None or revision is not None:
            raise click.UsageError("--channel and --revision are for snaps from the store, not files")
        if len(snaps) != 1:
            raise click.UsageError("install one snap file at a time, without snap names")
        if wait:
            raise click.UsageError("--wait-for-conflicts is for snaps from the store, not files")
        path = Path(files[0])
        if path.is_dir():
            fail(f"cannot install {path}: it is a directory, not a snap file (pack it with `overlord pack`)")
        if not path.is_file():
            fail(f"cannot install {path}: there is no such file")

        def ask(c: Client) -> tuple[str, list[str]]:
            cid = c.sideload(path, dangerous=dangerous)
            return cid, list(c.change(cid).get("data", {}).get("snap-names", []))

        _run(state_dir, "install", no_wait, ask, what=[path.name])
        return
    if dangerous:
        raise click.UsageError("--dangerous is for snap files only")
    if revision is not None and len(snaps) != 1:
        raise click.UsageError("--revision installs one snap: name exactly one")
    if channel is not None and len(snaps) != 1:
        raise click.UsageError("--channel installs one snap: name exactly one")
    _run(state_dir, "install", no_wait, _one_or_many("install", snaps, wait, channel=channel, revision=revision),
         what=snaps)


@cli.command()
@click.argument("snaps", nargs=-1, required=True, metavar="SNAP...")
@click.option("--revision", default=None, help="Remove only this revision (not the current one) of one snap.")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def remove(snaps: tuple[str, ...], revision: str | None, no_wait: bool, wait: bool, state_dir: Path | None) -> None:
    """Remove snaps: every revision and its data (or one inactive revision with --revision)."""
    if revision is not None and len(snaps) != 1:
        raise click.UsageError("--revision needs exactly one snap")
    _run(state_dir, "remove", no_wait, _one_or_many("remove", snaps, wait, revision=revision), revision, what=snaps)


@cli.command()
@click.argument("snaps", nargs=-1, metavar="[SNAP...]")
@channel_option
@click.option("--revision", default=None, help="Refresh to this revision (newer or older) of one snap.")
@click.option("--hold", is_flag=False, flag_value="forever", default=None, metavar="[=DURATION|forever]",
              help="Hold the auto-refresh of SNAP... (none: of every snap, at most 90 days) for DURATION "
                   "(24h, 7d, 1h30m) or forever (the default).")
@click.option("--unhold", is_flag=True, help="Remove the hold of SNAP... (none: the system-wide hold).")
@click.option("--time", "show_time", is_flag=True, help="Show the refresh timer, the last and next refresh, "
                                                         "and the holds.")
@click.option("--list", "show_list", is_flag=True, help="List the updates available, without installing them.")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def refresh(snaps: tuple[str, ...], channel: str | None, revision: str | None, hold: str | None, unhold: bool,
            show_time: bool, show_list: bool, no_wait: bool, wait: bool, state_dir: Path | None) -> None:
    """Refresh snaps to a newer revision of the channel they track (all of them when none is named).

    Refresh never goes back to an older revision: revert does, or --revision. --channel makes the snap track
    that channel from now on (and refreshes it when the channel has a newer revision). The system refreshes
    on its own on the refresh timer; --hold and --unhold hold it back, --time and --list show what it will do.
    """
    if sum((hold is not None, unhold, show_time, show_list)) > 1:
        raise click.UsageError("--hold, --unhold, --time and --list go alone")
    if hold is not None or unhold or show_time or show_list:
        if channel is not None or revision is not None:
            raise click.UsageError("--channel and --revision do not go with --hold, --unhold, --time or --list")
        _refresh_info(state_dir, snaps, hold, unhold, show_time)
        return
    _single("refresh", snaps, channel, revision)
    if not snaps:
        _run(state_dir, "refresh", no_wait, lambda c: c.snaps_action("refresh", []), up_to_date="All snaps up to date.")
        return
    _run(state_dir, "refresh", no_wait, _one_or_many("refresh", snaps, wait, channel=channel, revision=revision),
         what=snaps)


def _hold_until(hold: str, snaps: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """_hold_until turns --hold's value into an RFC 3339 time or "forever" (a snap name after a bare --hold is
    a snap: `refresh --hold hello` holds hello forever)."""
    import re
    from datetime import UTC, datetime, timedelta

    if hold == "forever":
        return hold, snaps
    m = re.match(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", hold)
    if not hold or m is None or not any(m.groups()):
        if re.match(r"^[a-z0-9-]+$", hold) and not hold.isdigit():
            return "forever", (hold, *snaps)
        raise click.UsageError(f"cannot hold for {hold!r}: give a duration (24h, 7d, 1h30m) or forever")
    d, h, mi, sec = (int(g or 0) for g in m.groups())
    try:
        until = datetime.now(UTC) + timedelta(days=d, hours=h, minutes=mi, seconds=sec)
    except OverflowError:  # past the year 9999, or more days than timedelta holds
        raise click.UsageError(f"cannot hold for {hold!r}: it would end after the year 9999; hold forever "
                               "instead (a bare --hold)") from None
    return f"{until:%Y-%m-%dT%H:%M:%SZ}", snaps


def _refresh_info(state_dir: Path | None, snaps: tuple[str, ...], hold: str | None, unhold: bool,
                  show_time: bool) -> None:
    """_refresh_info is refresh --hold, --unhold, --time and --list."""
    with session(state_dir, "refresh") as c:
        if hold is not None:
            until, names = _hold_until(hold, snaps)
            c.hold(list(names), until)
            what = ", ".join(names) if names else "all snaps"
            click.echo(f"Auto-refresh of {what} held " + ("indefinitely" if until == "forever" else f"until {until}"))
            return
        if unhold:
            c.unhold(list(snaps))
            click.echo(f"Removed the auto-refresh hold of {', '.join(snaps) if snaps else 'all snaps'}")
            return
        if show_time:
            if snaps:
                raise click.UsageError("--time shows the whole system: name no snaps")
            info = c.system_info().get("refresh", {})
            click.echo(f"timer: {info.get('timer', '-')}")
            click.echo(f"last: {info.get('last', 'n/a')}")
            click.echo(f"next: {info.get('next', 'n/a')}")
            if info.get("hold"):
                click.echo(f"hold: {info['hold']}")
            for name, until in sorted(info.get("held-snaps", {}).items()):
                click.echo(f"held: {name} ({'forever' if until == 'forever' else 'until ' + until})")
            return
        updates = [u for u in c.find(select="refresh") if not snaps or u["name"] in snaps]
    if not updates:
        click.echo("All snaps up to date.", err=True)
        return
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for name in ("Name", "Version", "Rev", "Channel", "Size", "Publisher"):
        t.add_column(name, overflow="fold")
    for u in updates:
        pub = u.get("publisher") or {}
        t.add_row(plain(u["name"]), plain(u["version"] or "-"), plain(u["revision"]), plain(_short(u["channel"])),
                  plain(str(u["download-size"])), plain(pub.get("username") or "-"))
    out().print(t)


@cli.command()
@click.argument("snap")
@click.option("--channel", required=True, metavar="CHANNEL", help="The channel to track from now on.")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def switch(snap: str, channel: str, no_wait: bool, wait: bool, state_dir: Path | None) -> None:
    """Make a snap track another channel, without refreshing it (the next refresh follows that channel)."""
    _run(state_dir, "switch", no_wait, _one_or_many("switch", (snap,), wait, channel=channel), what=[snap])


@cli.command()
@click.argument("snap")
@click.option("--revision", default=None, help="Revert to this installed revision instead of the previous one.")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def revert(snap: str, revision: str | None, no_wait: bool, wait: bool, state_dir: Path | None) -> None:
    """Revert a snap to its previous revision (its data as that revision left it)."""
    _run(state_dir, "revert", no_wait, _one_or_many("revert", (snap,), wait, revision=revision), what=[snap])


@cli.command()
@click.argument("snap")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def enable(snap: str, no_wait: bool, wait: bool, state_dir: Path | None) -> None:
    """Enable a disabled snap: its commands and services are back."""
    _run(state_dir, "enable", no_wait, _one_or_many("enable", (snap,), wait), what=[snap])


@cli.command()
@click.argument("snap")
@no_wait_option
@wait_conflicts_option
@state_dir_option
def disable(snap: str, no_wait: bool, wait: bool, state_dir: Path | None) -> None:
    """Disable a snap without removing it: its commands and services go away."""
    _run(state_dir, "disable", no_wait, _one_or_many("disable", (snap,), wait), what=[snap])


_COLUMNS = ("Name", "Version", "Rev", "Tracking", "Publisher", "Notes")


def _short(channel: str) -> str:
    """_short shows a channel as snap does, without the default track (latest/stable -> stable)."""
    return channel.removeprefix("latest/")


def notes(snap: dict[str, Any]) -> str:
    """notes tells what is special about an installed revision, as snap list does ("disabled", ...)."""
    out = []
    if snap.get("status") != "active":
        out.append("disabled")
    if snap.get("dangerous"):
        out.append("dangerous")
    return ",".join(out) or "-"


def snaps_table(snaps: list[dict[str, Any]]) -> Table:
    """snaps_table lists installed snaps like `snap list`: name, version, revision, tracking, publisher, notes.

    Names, versions and publishers fold on a narrow terminal; nothing is left out.
    """
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for name in _COLUMNS:
        t.add_column(name, overflow="fold", no_wrap=name in ("Rev", "Notes", "Tracking"), min_width=4)
    for s in snaps:
        pub = s.get("publisher") or {}
        t.add_row(plain(s["name"]), plain(s["version"]), plain(s["revision"]),
                  plain(_short(s.get("tracking-channel") or "") or "-"),
                  plain(pub.get("username") or pub.get("id") or "-"), plain(notes(s)))
    return t


@cli.command(name="list")
@click.argument("snaps", nargs=-1, metavar="[SNAP...]")
@click.option("--all", "all_", is_flag=True, help="Show every installed revision, not only the current ones.")
@json_option
@state_dir_option
def list_(snaps: tuple[str, ...], all_: bool, as_json: bool, state_dir: Path | None) -> None:
    """List the installed snaps (of SNAP... only, if given)."""
    with session(state_dir, "list snaps") as c:
        result = c.snaps(select="all" if all_ else "enabled", names=list(snaps) or None)
    if as_json:
        print_json(result)
    elif not result:
        if snaps:
            fail("no matching snaps installed")
        click.echo("No snaps are installed yet. Try 'overlord install hello'.")
    else:
        out().print(snaps_table(result))
