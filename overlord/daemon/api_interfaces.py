# SPDX-License-Identifier: GPL-3.0-or-later
"""/v2/connections, /v2/interfaces: plugs, slots and connections; connect and disconnect (snapd's shapes).

    GET  /v2/connections?snap=NAME&interface=NAME&select=all
    GET  /v2/interfaces?select=all|connected&names=a,b&plugs=true&slots=true
    POST /v2/interfaces {"action": "connect"|"disconnect", "plugs": [{"snap", "plug"}],
                         "slots": [{"snap", "slot"}], "forget": false}

They need the overlord's interface manager (``o.interface_manager``, the
system overlord's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import response
from .api import ApiRequest, Context, Endpoint
from .errors import ApiError, ErrorKind, bad_request, shown
from .system import system_overlord

if TYPE_CHECKING:
    from engine import Change
    from managers.ifacestate import Connection, InterfaceManager, Port, PortView


def _attrs(out: dict[str, Any], key: str, attrs: Any) -> None:
    if attrs:
        out[key] = dict(attrs)


def plug_info(p: Port, kind: str = "plug") -> dict[str, Any]:
    """plug_info is the JSON of a plug (or, with kind "slot", of a slot): {"snap", "plug", "interface", "attrs"?}."""
    out: dict[str, Any] = {"snap": p.ref.snap, kind: p.ref.name, "interface": p.interface}
    _attrs(out, "attrs", p.info.attrs)
    return out


def port_view(v: PortView, kind: str) -> dict[str, Any]:
    """port_view is a plug's or slot's JSON with the other ends of its connections."""
    out = plug_info(v.port, kind)
    other = "slot" if kind == "plug" else "plug"
    if v.connections:
        out["connections"] = [{"snap": r.snap, other: r.name} for r in v.connections]
    return out


def connection_info(c: Connection) -> dict[str, Any]:
    """connection_info is a connection's JSON: {"plug", "slot", "interface", "manual", "plug-attrs"?, ...}."""
    out: dict[str, Any] = {"slot": {"snap": c.ref.slot.snap, "slot": c.ref.slot.name},
                           "plug": {"snap": c.ref.plug.snap, "plug": c.ref.plug.name},
                           "interface": c.interface, "manual": c.manual}
    _attrs(out, "plug-attrs", c.plug_attrs)
    _attrs(out, "slot-attrs", c.slot_attrs)
    return out


def _known_snap(im: InterfaceManager, name: str) -> None:
    from managers.ifacestate import SYSTEM_SNAP
    from managers.snapstate import get_snap_state

    if name != SYSTEM_SNAP and get_snap_state(im.state, name) is None:
        raise ApiError(404, ErrorKind.SNAP_NOT_FOUND, f"cannot list connections: snap {shown(name)} is not installed")


def get_connections(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_connections lists established connections (select=all: undesired ones and unconnected plugs and slots
    too); snap and interface filter."""
    select = req.choice("select", ("connected", "all"), "connected")
    snap = req.query.get("snap") or None
    iface = req.query.get("interface") or None
    im = system_overlord(ctx).interface_manager
    with ctx.state:
        if snap is not None:
            _known_snap(im, snap)
        conns = im.connections(snap, iface, all=select == "all")
        return response.sync({
            "established": [connection_info(c) for c in conns.established],
            "undesired": [connection_info(c) for c in conns.undesired],
            "plugs": [port_view(v, "plug") for v in conns.plugs],
            "slots": [port_view(v, "slot") for v in conns.slots],
        })


def get_interfaces(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_interfaces lists the interfaces (select=connected: those in use; names=a,b: those), with their plugs
    (plugs=true) and slots (slots=true)."""
    select = req.choice("select", ("all", "connected"), "all")
    names = [n for n in (req.query.get("names") or "").split(",") if n] or None
    with_plugs = req.choice("plugs", ("true", "false"), "false") == "true"
    with_slots = req.choice("slots", ("true", "false"), "false") == "true"
    im = system_overlord(ctx).interface_manager
    with ctx.state:
        out = []
        for i in im.interfaces(names, connected=select == "connected"):
            item: dict[str, Any] = {"name": i.name, "summary": i.summary}
            if with_plugs:
                item["plugs"] = [plug_info(p) for p in i.plugs]
            if with_slots:
                item["slots"] = [plug_info(s, "slot") for s in i.slots]
            out.append(item)
        return response.sync(out)


def _end(body: Any, field: str, kind: str) -> tuple[str, str]:
    """_end reads the one element of "plugs" or "slots": {"snap": S, kind: N} (either may be empty)."""
    value = body.value.get(field)
    if not isinstance(value, list) or not value:
        raise bad_request(f"cannot decode request body: field {field!r} must be a list of one {{\"snap\", "
                          f"\"{kind}\"}} object")
    if len(value) > 1:
        raise bad_request(f"cannot act on several {field} at once: give one plug and one slot")
    item = value[0]
    if not isinstance(item, dict) or not all(isinstance(item.get(k, ""), str) for k in ("snap", kind)):
        raise bad_request(f"cannot decode request body: {field}[0] must be an object with string fields "
                          f"\"snap\" and \"{kind}\"")
    return item.get("snap", ""), item.get(kind, "")


def post_interfaces(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_interfaces connects or disconnects a plug and a slot; it answers async with the change."""
    body = req.json()
    action = body.action(("connect", "disconnect"))
    plug_snap, plug = _end(body, "plugs", "plug")
    slot_snap, slot = _end(body, "slots", "slot")
    forget = body.value.get("forget", False)
    if not isinstance(forget, bool):
        raise bad_request("cannot decode request body: field 'forget' must be a boolean")
    if not plug:
        raise bad_request(f"cannot {action}: the plug (or slot) name is missing")
    if action == "connect" and not plug_snap:
        raise bad_request("cannot connect: the plug's snap name is missing")
    im = system_overlord(ctx).interface_manager
    cr = req.change_request(action, {"plug": [plug_snap, plug], "slot": [slot_snap, slot], "forget": forget})

    def make() -> Change:  # the managers' errors are answered by errors.from_exception (interfaces-unchanged, ...)
        if action == "connect":
            return im.connect(plug_snap, plug, slot_snap, slot)
        return im.disconnect(plug_snap, plug, slot_snap, slot, forget=forget)

    return cr.run(ctx.state, make, lambda chg: response.async_(chg.id))


ENDPOINTS = [
    Endpoint("/v2/connections", get=get_connections),
    Endpoint("/v2/interfaces", get=get_interfaces, post=post_interfaces),
]
