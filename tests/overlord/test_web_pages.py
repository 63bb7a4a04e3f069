# SPDX-License-Identifier: GPL-3.0-or-later
"""The web view's parts without a daemon: --web's address, what the web port lets through, the graph's layout,
and what a change's page shows (the why-not reasons, progress, text never read as markup)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from overlord.daemon.web.pages import BOX_H, BOX_W, SIDE_BY_SIDE, change_html, error_line, layout, task_view
from overlord.daemon.web.port import loopback_host, parse_address, refusal


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("8080", ("127.0.0.1", 8080)),
    ("localhost:0", ("127.0.0.1", 0)),
    ("[::1]:9000", ("::1", 9000)),
    ("127.0.0.2:80", ("127.0.0.2", 80)),
])
def test_web_addresses_on_loopback_are_taken(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(("text", "says"), [
    ("0.0.0.0:8080", "0.0.0.0 is not a loopback address"),
    ("[::]:8080", ":: is not a loopback address"),
    ("192.168.1.4:8080", "192.168.1.4 is not a loopback address"),
    ("example.com:8080", "'example.com' is not an IP address"),
    ("127.0.0.1:http", "give HOST:PORT with a port from 0 to 65535"),
    ("127.0.0.1:70000", "give HOST:PORT with a port from 0 to 65535"),
])
def test_other_web_addresses_are_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_address(text)
    assert str(e.value).startswith(f"cannot serve the web view on {text!r}: ") and says in str(e.value)
    assert "\n" not in str(e.value)


def test_the_web_port_lets_through_only_reads_of_the_page_and_its_api() -> None:
    for path in ("/", "/web/", "/web/changes/7", "/web/static/app.js", "/v2/changes", "/v2/changes/7",
                 "/v2/notices", "/v2/warnings"):
        assert refusal("GET", path, "127.0.0.1:8080") is None, path
        assert refusal("HEAD", path, "localhost:8080") is None, path
    assert refusal("GET", "/v2/changes", "[::1]:8080") is None
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        refused = refusal(method, "/v2/changes/7", "127.0.0.1:8080")
        assert refused is not None and refused[0] == 405, method
    for path in ("/v2/system-info", "/v2/logs", "/v2/snaps", "/v2/snaps/hello/conf", "/v2/changes/7/x",
                 "/web/changes/7/x", "/v2/snapctl"):
        refused = refusal("GET", path, "127.0.0.1:8080")
        assert refused is not None and refused[0] == 404, path
    for host in (None, "", "attacker.example", "attacker.example:8080", "127.0.0.1.nip.io:8080", "10.0.0.1:8080"):
        refused = refusal("GET", "/v2/changes", host)
        assert refused is not None and refused[0] == 403, host
    assert loopback_host("LOCALHOST:1") and loopback_host("127.9.9.9") and not loopback_host("[::ffff:10.0.0.1]:1")


def _task(tid: str, status: str = "Do", waits: tuple[str, ...] = (), lanes: tuple[int, ...] = (),
          why: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": tid, "kind": "k", "summary": f"task {tid}", "status": status, "log": [],
            "progress": {"label": "", "done": 0, "total": 1}, "lanes": list(lanes), "wait-tasks": list(waits),
            "why": why, **extra}


def test_the_graph_puts_each_task_below_those_it_waits_for_and_each_lane_in_a_band() -> None:
    # Two lanes of two tasks each, both waiting for a first task outside any lane; a last one waits for both.
    tasks = [task_view(t) for t in (
        _task("1"), _task("2", waits=("1",), lanes=(1,)), _task("3", waits=("2",), lanes=(1,)),
        _task("4", waits=("1",), lanes=(2,)), _task("5", waits=("4",), lanes=(2,)), _task("6", waits=("3", "5")))]
    graph = layout(tasks)
    at = {t.id: (t.x, t.y) for t in graph.tasks}
    assert [b.label for b in graph.bands] == ["no lane", "lane 1", "lane 2"] and graph.labelled
    assert at["1"][1] < at["2"][1] < at["3"][1] < at["6"][1]  # rows by waits
    assert at["2"][1] == at["4"][1] and at["3"][1] == at["5"][1]  # the lanes side by side
    assert at["1"][0] == at["6"][0] < at["2"][0] < at["4"][0]  # bands left to right, in their first task's order
    assert len(graph.edges) == 6
    for band in graph.bands:  # every box inside its band, the band inside the drawing
        assert band.x >= 0 and band.x + band.width <= graph.width and band.y + band.height <= graph.height
    for t in graph.tasks:
        assert t.x > 0 and t.x + BOX_W <= graph.width and t.y > 0 and t.y + BOX_H <= graph.height
    boxes = {(t.x, t.y) for t in graph.tasks}
    assert len(boxes) == len(graph.tasks)  # no two boxes in one place


def test_the_graph_draws_tasks_of_a_step_side_by_side_and_survives_a_cycle() -> None:
    tasks = [task_view(t) for t in (_task("1"), _task("2"), _task("3", waits=("4",)), _task("4", waits=("3",)),
                                    _task("5", waits=("99",)))]  # 99: a task of another change
    graph = layout(tasks)
    at = {t.id: (t.x, t.y) for t in graph.tasks}
    assert not graph.labelled and len(graph.bands) == 1
    assert at["1"][1] == at["2"][1] == at["5"][1] and at["1"][0] < at["2"][0] < at["5"][0]
    assert at["3"][1] == at["4"][1] > at["1"][1]  # the cycle's tasks: after the rest
    assert len(graph.edges) == 2


def test_many_tasks_of_one_step_go_on_several_lines() -> None:
    tasks = [task_view(_task(str(i))) for i in range(1, 11)] + [task_view(_task("11", waits=("1",)))]
    graph = layout(tasks)
    at = {t.id: (t.x, t.y) for t in graph.tasks}
    assert len({x for x, _ in at.values()}) == SIDE_BY_SIDE  # no wider than that
    assert len({y for _, y in at.values()}) == 4  # ten tasks of step 0 on three lines, then step 1
    assert at["11"][1] > max(y for tid, (_, y) in at.items() if tid != "11")
    assert len({(x, y) for x, y in at.values()}) == 11 and graph.width < (SIDE_BY_SIDE + 1) * BOX_W
    assert all(t.y + BOX_H <= graph.height for t in graph.tasks)


def test_progress_bars_follow_the_watch_rules() -> None:
    def bar(status: str, done: int, total: int) -> tuple[str, str]:
        v = task_view(_task("1", status, progress={"label": "steps", "done": done, "total": total}))
        return v.bar, v.amount

    assert bar("Done", 1, 1) == ("full", "100%")
    assert bar("Doing", 3, 5) == ("value", "3/5")
    assert bar("Doing", 1, 1) == ("pulse", "")  # running, nothing reported
    assert bar("Do", 0, 1) == ("", "")
    assert bar("Error", 1, 1) == ("", "")


def test_a_change_page_shows_each_tasks_why_not_when_the_api_gives_one() -> None:
    why = {"reason": "waiting-for-tasks", "message": "waits for task 1 (download, Doing)",
           "tasks": [{"id": "1", "kind": "download", "status": "Doing", "change": "3"}]}
    chg = {"id": "3", "kind": "install", "summary": "Install <script>alert(1)</script>", "status": "Doing",
           "ready": False, "spawn-time": "2026-12-07T08:00:00.000000Z", "ready-time": None,
           "tasks": [_task("1", "Doing", why=None), _task("2", "Do", waits=("1",), why=why),
                     {**_task("3", "Do", waits=("2",)), "summary": "no why <b>here</b>"}]}
    del chg["tasks"][2]["why"]  # a daemon without the why-not reasons: nothing is shown
    page = change_html(chg, [{"message": "disk <i>full</i>", "last-added": "2026-12-07T08:00:00.000000Z",
                              "new": True}])
    card = re.search(r'<div [^>]*id="task-2".*?</foreignObject>', page, re.S)
    assert card is not None and 'data-why="waiting-for-tasks"' in card.group()
    assert "waits for task 1 (download, Doing)" in card.group()
    for tid in ("1", "3"):
        other = re.search(rf'<div [^>]*id="task-{tid}".*?</foreignObject>', page, re.S)
        assert other is not None and 'class="why"' not in other.group()
    row = re.search(r'<tr id="row-2".*?</tr>', page, re.S)
    assert row is not None and "waiting-for-tasks" in row.group() and "waits for task 1" in row.group()
    # Text from the daemon is text, never markup.
    assert "<script>" not in page and "Install &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "no why &lt;b&gt;here&lt;/b&gt;" in page and "disk &lt;i&gt;full&lt;/i&gt;" in page
    assert 'data-live="1"' in page and 'id="change-status" data-status="Doing"' in page
    assert page.count('class="edge') == 2
    # ?part=main answers the <main> alone, which the page's script swaps in.
    part = change_html(chg, [], part=True)
    assert part.lstrip().startswith("<main") and part.rstrip().endswith("</main>")


def test_the_list_gives_a_change_error_in_one_line() -> None:
    assert error_line("cannot perform the following tasks:\n- Fetch the image (connection refused)") == \
        "Fetch the image (connection refused)"
    assert error_line("cannot perform the following tasks:\n- A (x)\n- B (y)\n- C (z)") == "A (x) (and 2 more)"
    assert error_line("change aborted\nat boot") == "change aborted"
    assert error_line("\n") is None
