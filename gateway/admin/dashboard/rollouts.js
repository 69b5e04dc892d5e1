"use strict";

// Gated rollouts on the dashboard: when a route of /_stackgate/stats has a rollout plan, polls
// /_stackgate/rollouts (docs/rollouts.md) and draws each route's step, gates and timeline.
// Everything from the server goes in through textContent, never HTML.

(function () {
  const ROLLOUTS_URL = "/_stackgate/rollouts";
  const TIMELINE = 12;
  const BAD = new Set(["rollback", "hold", "abort"]);
  let wanted = false;
  let busy = false;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "testid") node.dataset.testid = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function pct(value) {
    return `${Number(value).toLocaleString("en-US", { maximumFractionDigits: 2 })} %`;
  }

  function stepsView(item) {
    const list = el("ol", { class: "rollout-steps", "aria-label": "Steps" });
    (item.plan.steps || []).forEach((step, index) => {
      const value = typeof step === "object" ? step.percent : step;
      const state = index < item.step ? "done" : index === item.step ? "current" : "";
      list.append(el("li", { class: state }, pct(value)));
    });
    return list;
  }

  function gatesView(item) {
    // A running step: the gates now. Otherwise: the gates as they stood at the last decision.
    const decided = [...(item.history || [])].reverse().find((event) => event.gates);
    const shown = item.status !== "running" && decided ? decided : null;
    const table = el("table", { class: "rollout-gates", testid: `rollout-gates-${item.route}` });
    table.append(el("caption", {}, shown ? `Gates at the ${shown.action} (${shown.time})` : "Gates over the current step"));
    table.append(el("thead", {}, el("tr", {}, el("th", {}, "Gate"), el("th", {}, "Value"), el("th", {}, "Threshold"), el("th", {}, "Verdict"))));
    const body = el("tbody");
    for (const gate of (shown ? shown.gates : item.gates) || []) {
      const verdict = gate.ok === null ? "no data yet" : gate.ok ? "holds" : "fails";
      body.append(el("tr", {}, el("td", {}, gate.gate), el("td", {}, gate.value === null ? "–" : gate.value),
        el("td", {}, gate.threshold), el("td", { class: gate.ok === false ? "fail" : gate.ok ? "pass" : "" }, verdict)));
    }
    table.append(body);
    return table;
  }

  function timelineView(item) {
    const list = el("ol", { class: "rollout-timeline", testid: `rollout-timeline-${item.route}`, "aria-label": "Timeline" });
    for (const event of (item.history || []).slice(-TIMELINE).reverse()) {
      const line = `${event.action}: ${pct(event.from_percent)} → ${pct(event.to_percent)} (${event.by}) · ${event.reason}`;
      list.append(el("li", { class: BAD.has(event.action) ? "bad" : "" }, el("time", { datetime: event.time }, event.time), line));
    }
    return list;
  }

  function card(item) {
    const figures = item.figures || {};
    const target = figures.target || {};
    const source = figures.source || {};
    const summary = item.status === "not_started" ? "not started yet"
      : `${pct(item.percent)} on ${item.target} · ${item.window_seconds ?? 0} s in the step · target ${target.requests ?? 0} requests, source ${source.requests ?? 0}`;
    return el("article", { class: "rollout-card", testid: `rollout-${item.route}` },
      el("h3", {}, `${item.route}: ${item.source} → ${item.target} `, el("span", { class: `badge ${item.status}`, testid: `rollout-status-${item.route}` }, item.status.replace("_", " "))),
      el("p", { class: "muted" }, summary),
      item.last_failure ? el("p", { class: "fail", testid: `rollout-failure-${item.route}` }, `Last failure (${item.last_failure.time}): ${item.last_failure.reason}`) : null,
      stepsView(item), gatesView(item), timelineView(item));
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(ROLLOUTS_URL, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const data = await response.json();
      const box = document.querySelector('[data-testid="rollout-routes"]');
      box.replaceChildren(...Object.values(data.rollouts || {}).map(card));
      document.querySelector('[data-testid="rollouts"]').hidden = false;
    } catch {
      // the main poll shows the gateway's state; this section keeps its last view
    } finally {
      busy = false;
    }
  }

  document.addEventListener("stackgate:stats", (event) => {
    wanted = (event.detail.routes || []).some((route) => route.rollout);
    const section = document.querySelector('[data-testid="rollouts"]');
    if (!wanted) {
      section.hidden = true;
      return;
    }
    refresh();
  });
})();
