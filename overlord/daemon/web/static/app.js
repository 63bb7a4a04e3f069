// SPDX-License-Identifier: GPL-3.0-or-later
// The web view's script: follow the daemon without reloading (docs/daemon.md, "The web view").
//
// It long-polls GET /v2/notices for change-update and warning notices after
// the newest one the page has seen, and when one comes it fetches the page's
// <main> again (?part=main) and swaps it in. While tasks run (main's
// data-live is 1), whose progress makes no notice, the poll's timeout is one
// second and <main> is fetched after each. The ages ("3m 4s ago") go on
// counting every second. It only reads.
"use strict";

(function () {
  let main = document.getElementById("main");
  if (!main) {
    return;
  }
  const indicator = document.getElementById("live");
  // The daemon's clock less the browser's, so that ages are counted from the daemon's "now".
  const offset = Number(main.dataset.now || Date.now()) - Date.now();
  let after = main.dataset.after || "";
  let failures = 0;

  function age(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function tick() {
    const now = Date.now() + offset;
    for (const el of document.querySelectorAll("[data-since]")) {
      const then = Date.parse(el.dataset.since);
      if (!Number.isNaN(then)) el.textContent = age(now - then);
    }
  }

  function say(state, text) {
    if (!indicator) return;
    indicator.className = "live " + state;
    indicator.textContent = text;
  }

  function pause(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function refresh() {
    const url = new URL(window.location.href);
    url.searchParams.set("part", "main");
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    const html = await r.text();
    const holder = document.createElement("template");
    holder.innerHTML = html;
    const fresh = holder.content.querySelector("main");
    if (!fresh) throw new Error("the daemon answered " + r.status + " without a page");
    main.replaceWith(fresh);
    main = fresh;
    tick();
    document.dispatchEvent(new CustomEvent("overlord:refreshed"));
  }

  async function follow() {
    for (;;) {
      const live = main.dataset.live === "1";
      const q = new URLSearchParams({ types: "change-update,warning", timeout: live ? "1s" : "30s" });
      if (after) q.set("after", after);
      try {
        const r = await fetch("/v2/notices?" + q.toString(), { cache: "no-store", credentials: "same-origin" });
        const answer = await r.json();
        if (!r.ok) throw new Error((answer.result && answer.result.message) || r.statusText);
        for (const n of answer.result) {
          if (n["last-repeated"] > after) after = n["last-repeated"];
        }
        if (answer.result.length > 0 || live) await refresh();
        failures = 0;
        say("on", "live");
      } catch (e) {
        failures += 1;
        say("off", "the daemon is not answering; trying again");
        await pause(Math.min(10000, 500 * failures));
      }
    }
  }

  setInterval(tick, 1000);
  tick();
  say("on", "live");
  follow();
})();
