# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord connect`, `disconnect`, `connections`, `interfaces` (snapd's cmd_connect.go, cmd_disconnect.go,
cmd_connections.go, cmd_interface.go).

A plug or slot is named SNAP:NAME; the system's own slots are :NAME (the
system snap is called "system"). connect and disconnect wait for their
change with watch's display, like the snap verbs, or print its id with
--no-wait.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import RenderableType
from rich.text import Text

from ..client import ApiError, Client
from ._client import json_option, session, state_dir_option
from ._group import cli
from ._output import out, plain, print_json, table
from .cmd_snaps import no_wait_option
from .cmd_watch import check_done, watch_change

#: SYSTEM_SNAP is how the system's implicit slots are named in the API; the command line writes them ":name".
SYSTEM_SNAP = "system"


def split_ref(value: str, *, strict: bool, what: str, hint: str) -> tuple[str, str]:
    """split_ref reads SNAP:NAME, :NAME (the system) or, unless strict, SNAP alone; a bad value is a usage error."""
    snap, sep, name = value.partition(":")
    if ":" in name or (sep and not name) or (not sep and strict) or not (snap or name) \
            or any(c.isspace() for c in value):
        want = "snap:name or :name" if strict else "snap:name, :name or snap"
        raise click.BadParameter(f"invalid {what} {value!r} (want {want})", param_hint=f"'{hint}'")
    return snap, name


def wait_change(c: Client, change_id: str, no_wait: bool) -> dict[str, Any] | None:
    """wait_change follows a change to its end with watch's display, like the snap verbs; a change that does not
    end Done is an error naming what failed. With no_wait it prints the id and returns at once."""
    if no_wait:
        click.echo(change_id)
        return None
    final = watch_change(c, change_id)
    check_done(final)
    return final


@cli.command()
@click.argument("plug", metavar="SNAP:PLUG")
@click.argument("slot", required=False, metavar="[SNAP:SLOT]")
@no_wait_option
@state_dir_option
def connect(plug: str, slot: str | None, no_wait: bool, state_dir: Path | None) -> None:
    """Connect a plug to a slot.

    SLOT is SNAP:SLOT, SNAP (its only slot that fits) or :SLOT (the system's);
    without it the plug goes to the system's slot that fits.
    """
    plug_snap, plug_name = split_ref(plug, strict=True, what="plug", hint="SNAP:PLUG")
    if not plug_snap:
        raise click.BadParameter(f"invalid plug {plug!r}: the system has no plugs (want snap:plug)",
                                 param_hint="'SNAP:PLUG'")
    slot_snap, slot_name = split_ref(slot, strict=False, what="slot", hint="SNAP:SLOT") if slot else ("", "")
    with session(state_dir, f"connect {plug}") as c:
        wait_change(c, c.connect(plug_snap, plug_name, slot_snap, slot_name), no_wait)


@cli.command()
@click.argument("plug", metavar="SNAP:PLUG")
@click.argument("slot", required=False, metavar="[SNAP:SLOT]")
@click.option("--forget", is_flag=True,
              help="Also forget an automatic connection you disconnected, so that it may come back by itself.")
@no_wait_option
@state_dir_option
def disconnect(plug: str, slot: str | None, forget: bool, no_wait: bool, state_dir: Path | None) -> None:
    """Disconnect a plug from a slot; with one argument, everything connected to that plug or slot.

    An automatic connection you disconnect stays disconnected across
    refreshes (unless --forget).
    """
    plug_snap, plug_name = split_ref(plug, strict=True, what="plug or slot", hint="SNAP:PLUG")
    slot_snap, slot_name = split_ref(slot, strict=True, what="slot", hint="SNAP:SLOT") if slot else ("", "")
    with session(state_dir, f"disconnect {plug}") as c:
        try:
            change_id = c.disconnect(plug_snap, plug_name, slot_snap, slot_name, forget=forget)
        except ApiError as e:
            if e.kind != "interfaces-unchanged":
                raise
            click.echo("No connections to disconnect.")
            return
        wait_change(c, change_id, no_wait)


def endpoint(ref: dict[str, Any], kind: str) -> str:
    """endpoint writes a plug or slot reference as the command line names it: SNAP:NAME, or :NAME for the system."""
    return f"{'' if ref['snap'] == SYSTEM_SNAP else ref['snap']}:{ref[kind]}"


def _determinant(conn: dict[str, Any]) -> str:
    """_determinant is snapd's "[tag]" after a content connection's interface: the content tag (by default the
    plug's name)."""
    if conn.get("interface") != "content":
        return ""
    tag = (conn.get("plug-attrs") or {}).get("content") or conn["plug"]["plug"]
    return f"[{tag}]"


def connections_rows(result: dict[str, Any], *, all: bool, wanted: str | None = None) -> list[list[Text]]:
    """connections_rows are the rows of `overlord connections`: Interface, Plug, Slot, Notes, sorted like snapd's."""
    rows: list[tuple[str, str, str, str]] = []
    for conn in result["established"]:
        rows.append((conn["interface"] + _determinant(conn), endpoint(conn["plug"], "plug"),
                     endpoint(conn["slot"], "slot"), "manual" if conn.get("manual") else "-"))
    if all:
        for plug in result["plugs"]:
            if not plug.get("connections"):
                rows.append((plug["interface"], endpoint(plug, "plug"), "-", "-"))
        for slot in result["slots"]:
            if slot["snap"] == SYSTEM_SNAP and wanted != SYSTEM_SNAP:
                continue  # the system's unconnected slots are many and dull (snapd hides them too)
            if not slot.get("connections"):
                rows.append((slot["interface"], "-", endpoint(slot, "slot"), "-"))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [[plain(v) for v in r] for r in rows]


def connections_table(rows: list[list[Text]]) -> RenderableType:
    """connections_table is the table of `overlord connections`; plugs and slots fold on a narrow terminal."""
    t = table("Interface", "Plug", "Slot", "Notes", wrap=("Plug", "Slot"))
    for row in rows:
        t.add_row(*row)
    return t


def interfaces_table(result: list[dict[str, Any]]) -> RenderableType:
    """interfaces_table is the table of `overlord interfaces`: each interface, its summary, plugs and slots."""
    t = table("Interface", "Summary", "Plugs", "Slots", wrap=("Summary", "Plugs", "Slots"))
    for i in result:
        plugs = ", ".join(endpoint(p, "plug") for p in i.get("plugs", [])) or "-"
        slots = ", ".join(endpoint(s, "slot") for s in i.get("slots", [])) or "-"
        t.add_row(plain(i["name"]), plain(i["summary"]), plain(plugs), plain(slots))
    return t


@cli.command()
@click.argument("snap", required=False, metavar="[SNAP]")
@click.option("--all", "all_", is_flag=True, help="Show unconnected plugs and slots too.")
@json_option
@state_dir_option
def connections(snap: str | None, all_: bool, as_json: bool, state_dir: Path | None) -> None:
    """List the connections between plugs and slots (of SNAP only, with its unconnected plugs and slots)."""
    if snap and all_:
        raise click.UsageError("cannot use --all with a snap name (a snap's listing shows everything of it)")
    with session(state_dir, "list connections") as c:
        result = c.connections(snap=snap, all=all_ or bool(snap))
    if as_json:
        print_json(result)
        return
    rows = connections_rows(result, all=all_ or bool(snap), wanted=snap)
    if not rows:
        click.echo(f"No connections of snap {snap!r} found." if snap else "No connections found.")
        return
    out().print(connections_table(rows))


@cli.command()
@json_option
@state_dir_option
def interfaces(as_json: bool, state_dir: Path | None) -> None:
    """List the interfaces the system knows, with the plugs and slots of each."""
    with session(state_dir, "list interfaces") as c:
        result = c.interfaces()
    if as_json:
        print_json(result)
        return
    out().print(interfaces_table(result))
