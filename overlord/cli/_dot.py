# SPDX-License-Identifier: GPL-3.0-or-later
"""A change's tasks as a Graphviz graph: wait-for edges, lanes as clusters, statuses as colours."""

from __future__ import annotations

from typing import Any

from ._output import safe

#: Fill colours by status (the colours of the tables, lighter).
STATUS_COLOURS = {
    "Done": "#b9e4b9", "Doing": "#b3e0f2", "Undoing": "#b3e0f2", "Error": "#f4a7a7", "Undone": "#f7e7a1",
    "Undo": "#faf0c8", "Abort": "#f9c89b", "Hold": "#e5c3ec", "Wait": "#c6cdf7", "Do": "#ffffff",
    "Default": "#ffffff",
}


def quote(text: object) -> str:
    """quote makes text a DOT string: quotes and backslashes escaped, control characters shown."""
    return '"' + safe(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(task: dict[str, Any]) -> str:
    label = f"{task['id']} {task['kind']}\n{task['summary']}\n{task['status']}"
    lanes = task.get("lanes") or []
    if len(lanes) > 1:
        label += f"\nlanes {','.join(str(lane) for lane in lanes)}"
    return quote(label).replace("\n", "\\n")


def change_dot(change: dict[str, Any]) -> str:
    """change_dot returns the DOT source of a change's task graph.

    An edge goes from a task to each task that waits for it. A task in one
    lane sits in that lane's cluster; a task in several lanes sits outside
    the clusters, its label naming its lanes (a node belongs to one cluster).
    """
    title = f"Change {change['id']} ({change['kind']}): {change['summary']} - {change['status']}"
    lines = [
        f"digraph {quote('change ' + str(change['id']))} {{",
        f"  label={quote(title)};",
        "  labelloc=t;",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    tasks = change["tasks"]
    ids = {t["id"] for t in tasks}
    lanes: dict[int, list[dict[str, Any]]] = {}
    loose = []
    for t in tasks:
        tl = t.get("lanes") or []
        if len(tl) == 1:
            lanes.setdefault(tl[0], []).append(t)
        else:
            loose.append(t)

    def node_line(t: dict[str, Any], indent: str) -> str:
        colour = STATUS_COLOURS.get(t["status"], "#ffffff")
        return f"{indent}{quote('t' + t['id'])} [label={_node(t)}, fillcolor={quote(colour)}];"

    for lane in sorted(lanes):
        lines.append(f"  subgraph {quote('cluster_lane_' + str(lane))} {{")
        lines.append(f"    label={quote('lane ' + str(lane))};")
        lines.append('    style=dashed;')
        lines.extend(node_line(t, "    ") for t in lanes[lane])
        lines.append("  }")
    lines.extend(node_line(t, "  ") for t in loose)
    for t in tasks:
        for w in t.get("wait-tasks") or []:
            if w in ids:
                lines.append(f"  {quote('t' + w)} -> {quote('t' + t['id'])};")
    lines.append("}")
    return "\n".join(lines) + "\n"
