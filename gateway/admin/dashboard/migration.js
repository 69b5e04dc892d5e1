"use strict";

// The migration report page: polls /_stackgate/migration (docs/migration.md) and draws it.
// Everything from the server goes in through textContent, never HTML.

const REPORT_URL = "/_stackgate/migration";
const POLL_MS = 5000;
const TIMEOUT_MS = 10000;
const numbers = new Intl.NumberFormat("en-US");
let lastText = null;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "testid") node.dataset.testid = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function byTestId(id) {
  return document.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

const count = (v) => (typeof v === "number" && Number.isFinite(v) ? numbers.format(v) : "–");
const percent = (v) => (typeof v === "number" ? `${(v * 100).toFixed(2)}%` : "–");
const ms = (v) => (typeof v === "number" ? `${v} ms` : "–");
const slug = (text) => String(text).replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");

function variantsTable(testid, variants) {
  const names = Object.keys(variants || {});
  if (!names.length) return h("p", { class: "empty" }, "No requests yet.");
  return h("table", { class: "report variants", testid },
    h("thead", {}, h("tr", {}, ["Variant", "Requests", "5xx", "5xx rate", "p50", "p99"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, names.map((name) => {
      const v = variants[name];
      return h("tr", { testid: `${testid}-${name}` },
        h("td", {}, name), h("td", { class: "num", testid: `${testid}-${name}-requests` }, count(v.requests)),
        h("td", { class: "num" }, count(v["5xx"])), h("td", { class: "num" }, percent(v["5xx_rate"])),
        h("td", { class: "num", testid: `${testid}-${name}-p50` }, ms(v.p50_ms)), h("td", { class: "num" }, ms(v.p99_ms)));
    })));
}

function fieldsList(fields) {
  if (!fields || !fields.length) return h("span", { class: "muted" }, "none");
  return fields.map((f, i) => [i ? ", " : "", h("code", {}, f.field), " ",
    h("span", { class: `verdict ${f.verdict}` }, f.verdict), ` ${count(f.differences)}`]);
}

function rolloutView(route, rollout) {
  return h("div", { class: "rollout", testid: `report-${route}-rollout` },
    h("h4", {}, "Rollout"),
    rolloutBody(route, rollout));
}

function rolloutBody(route, rollout) {
  if (!rollout) return h("p", { class: "empty" }, "No rollout for this route.");
  if (rollout.error) return h("p", { class: "empty", testid: `report-${route}-rollout-error` }, rollout.error);
  const failure = rollout.last_failure;
  const history = rollout.history || [];
  return [
    h("p", { testid: `report-${route}-rollout-status` },
      `${rollout.status} · ${rollout.target} at ${rollout.percent} % (step ${rollout.step})`),
    failure ? h("p", { testid: `report-${route}-rollout-failure` },
      `Last failure (${failure.time}): ${failure.reason}`) : null,
    history.length ? h("ol", { class: "history", testid: `report-${route}-rollout-history` },
      history.slice(-20).map((e) => h("li", {}, `${e.time} ${e.action}: ${e.from_percent} % → ${e.to_percent} % (${e.reason})`))) : null,
  ];
}

function endpointsTable(route, endpoints) {
  if (!endpoints.length) return h("p", { class: "empty" }, "No endpoint seen yet.");
  const backends = [...new Set(endpoints.flatMap((e) => Object.keys(e.variants || {})))].sort();
  return h("div", { class: "table-wrap" }, h("table", { class: "report", testid: `report-${route}-endpoints` },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Endpoint"), h("th", { scope: "col" }, "Match rate"),
      h("th", { scope: "col" }, "Top fields"),
      backends.map((b) => h("th", { scope: "col" }, `${b}: requests · 5xx · p50 / p99`)))),
    h("tbody", {}, endpoints.map((e) => {
      const id = `report-${route}-endpoint-${slug(e.endpoint)}`;
      const templates = Object.entries(e.templates || {}).map(([b, t]) => `${b}: ${t}`).join(" · ");
      return h("tr", { testid: id },
        h("td", {}, h("code", {}, e.endpoint), templates ? h("div", { class: "muted" }, templates) : null),
        h("td", { class: "num", testid: `${id}-rate` }, percent(e.match_rate)),
        h("td", {}, fieldsList(e.top_fields)),
        backends.map((b) => {
          const v = (e.variants || {})[b];
          return h("td", { class: "num", testid: `${id}-${b}` },
            v ? `${count(v.requests)} · ${percent(v["5xx_rate"])} · ${ms(v.p50_ms)} / ${ms(v.p99_ms)}` : "–");
        }));
    }))));
}

function routeView(r) {
  const route = slug(r.route);
  const weights = Object.entries(r.backends || {}).map(([b, w]) => `${b} ${w}`).join(" · ");
  return h("section", { class: "mirror-card route-report", testid: `report-${route}` },
    h("header", { class: "card-head" },
      h("h3", {}, r.route), h("span", { class: "muted" }, ` ${r.prefix} · ${weights}${r.mirror ? "" : " · not mirrored"}`),
      h("span", { class: "rate", testid: `report-${route}-rate` }, percent(r.match_rate))),
    h("p", {}, `${count(r.matches)} matches · ${count(r.mismatches)} mismatches · top fields: `, fieldsList(r.top_fields)),
    variantsTable(`report-${route}-variants`, r.variants),
    h("h4", {}, "Endpoints"),
    endpointsTable(route, r.endpoints || []),
    rolloutView(route, r.rollout));
}

function render(report) {
  const text = JSON.stringify(report);
  if (text === lastText) return;
  lastText = text;
  byTestId("generated-at").textContent = report.generated_at || "–";
  byTestId("workers-summed").textContent = report.workers_summed ? "summed over every worker" : "this process";
  const routes = report.routes || [];
  byTestId("report-routes").replaceChildren(...(routes.length
    ? routes.map(routeView)
    : [h("p", { class: "empty" }, "No split route: nothing to compare.")]));
  document.getElementById("report").setAttribute("aria-busy", "false");
}

function showProblem(message) {
  const banner = byTestId("report-error");
  const live = byTestId("live-status");
  banner.hidden = !message;
  banner.textContent = message ? `report unavailable: ${message}. Retrying every ${POLL_MS / 1000} s.` : "";
  live.textContent = message ? "offline" : `live · updated ${new Date().toLocaleTimeString()}`;
  live.className = message ? "live down" : "live ok";
}

async function poll() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(REPORT_URL, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" }, signal: controller.signal });
    if (!response.ok) {
      const hint = response.status === 401 || response.status === 403 ? " (sign in as a consumer with an admin role)" : "";
      throw new Error(`HTTP ${response.status}${hint}`);
    }
    render(await response.json());
    showProblem(null);
  } catch (error) {
    showProblem(error.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s` : error.message);
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

poll();
