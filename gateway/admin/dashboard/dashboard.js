"use strict";

// The operator dashboard: polls /_stackgate/stats (docs/admin-api.md) and draws it.
// Everything from the server goes in through textContent or SVG attributes, never HTML.

const STATS_URL = "/_stackgate/stats";
const POLL_MS = 2000;
const TIMEOUT_MS = 5000;
const MAX_MISMATCHES = 5;
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#c2410c", "#047857", "#7c3aed", "#be185d", "#0e7490", "#4d7c0f", "#b91c1c"];
const BUSY_FRACTION = 0.75;
const RATE_OK = 0.99;
const RATE_WARN = 0.95;
// The last line of a diff the gateway cut (gateway/shadow/compare.py CUT_MARKER).
const CUT_MARKER = "… diff cut here";

const numbers = new Intl.NumberFormat("en-US");
const rendered = new Map();
let lastSuccess = null;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  node.append(...present(children).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function present(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
}

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs);
  node.append(...present(children));
  return node;
}

function setAttributes(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "testid") node.dataset.testid = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
}

function byTestId(id) {
  return document.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

function setText(id, text) {
  const node = byTestId(id);
  if (node) node.textContent = text;
  return node;
}

function count(value) {
  return typeof value === "number" && Number.isFinite(value) ? numbers.format(value) : "–";
}

function percent(fraction) {
  return typeof fraction === "number" ? `${(fraction * 100).toFixed(2)}%` : "–";
}

function orDash(value) {
  return value === null || value === undefined || value === "" ? "–" : String(value);
}

function changed(key, value) {
  const text = JSON.stringify(value);
  if (rendered.get(key) === text) return false;
  rendered.set(key, text);
  return true;
}

function backendColors(data) {
  const names = new Set([
    ...Object.keys(data.backends || {}),
    ...Object.keys(data.totals?.by_backend || {}),
    ...Object.keys(data.series?.backends || {}),
  ]);
  return new Map([...names].sort().map((name, i) => [name, PALETTE[i % PALETTE.length]]));
}

function swatch(color) {
  return s("svg", { class: "swatch", width: 10, height: 10, viewBox: "0 0 10 10", "aria-hidden": "true" },
    s("rect", { width: 10, height: 10, rx: 2, fill: color }));
}

function clock(seconds) {
  return new Date(seconds * 1000).toISOString().slice(11, 16);
}

// --- header and totals ------------------------------------------------------

function renderConfig(config, generatedAt) {
  const last = config.last_reload || {};
  setText("config-version", orDash(config.version));
  setText("config-source", orDash(config.source));
  const status = setText("reload-status", last.ok ? "ok" : "failed");
  status.classList.toggle("ok", !!last.ok);
  status.classList.toggle("failed", !last.ok);
  setText("reload-message", [last.message, last.at && `at ${last.at}`].filter(Boolean).join(" "));
  const generated = setText("generated-at", orDash(generatedAt));
  generated.setAttribute("datetime", generatedAt || "");

  const problems = last.ok ? [] : last.problems || [];
  byTestId("reload-problems").hidden = !!last.ok;
  byTestId("reload-problem-list").replaceChildren(...problems.map((p) => h("li", {}, String(p))));
}

function renderTotals(totals) {
  const byBackend = Object.values(totals.by_backend || {});
  setText("total-requests", count(totals.requests));
  setText("total-5xx", count(byBackend.reduce((sum, b) => sum + (b["5xx"] || 0), 0)));
  setText("throttled", count(totals.throttled));
  setText("auth-failures", count(totals.auth_failures));
  setText("mirror-matches", count(totals.mirror?.matches));
  setText("mirror-mismatches", count(totals.mirror?.mismatches));
  setText("mirror-not-comparable", count(totals.mirror?.not_comparable));
}

// --- backends ---------------------------------------------------------------

function poolLevel(pool) {
  if (pool.saturated || pool.busy >= pool.threads) return "saturated";
  return pool.busy / pool.threads >= BUSY_FRACTION ? "busy" : "ok";
}

function poolView(name, pool) {
  if (typeof pool.threads !== "number" || pool.threads <= 0) {
    return h("p", { class: "pool muted" }, "No worker pool (", pool.kind || "not in-process", ")");
  }
  const level = poolLevel(pool);
  const fill = h("span", { class: "meter-fill" });
  fill.style.width = `${Math.min(100, (pool.busy / pool.threads) * 100)}%`;
  const extra = ["rejected", "timeouts"].filter((k) => typeof pool[k] === "number");
  return h("div", { class: `pool ${level}` },
    h("div", { class: "pool-line" },
      h("span", {}, "Pool ",
        h("strong", { testid: `backend-${name}-busy` }, count(pool.busy)), " / ",
        h("span", { testid: `backend-${name}-threads` }, count(pool.threads)), " threads busy"),
      h("span", { class: `level ${level}`, testid: `backend-${name}-saturation` }, level)),
    h("div", {
      class: "meter", role: "meter", "aria-label": `${name} worker threads busy`,
      "aria-valuemin": 0, "aria-valuemax": pool.threads, "aria-valuenow": pool.busy,
    }, fill),
    extra.length ? h("p", { class: "pool-extra muted" }, extra.map((k, i) => [
      i ? " · " : "", `${k} `, h("span", { testid: `backend-${name}-${k}` }, count(pool[k])),
    ])) : null);
}

function backendCard(name, pool, counts, color) {
  const classes = ["2xx", "3xx", "4xx", "5xx"];
  const errorRate = counts.requests ? (counts["5xx"] || 0) / counts.requests : null;
  return h("article", { class: "card", testid: `backend-${name}`, "aria-labelledby": `backend-title-${name}` },
    h("header", { class: "card-head" },
      swatch(color),
      h("h3", { id: `backend-title-${name}` }, name),
      h("span", { class: "kind" }, pool.kind || "")),
    h("p", { class: "card-big" },
      h("span", { class: "big-number", testid: `backend-${name}-requests` }, count(counts.requests || 0)),
      h("span", { class: "muted" }, " requests"),
      errorRate === null ? null : h("span", { class: `error-rate ${errorRate > 0 ? "bad" : ""}` }, `${percent(errorRate)} 5xx`)),
    h("dl", { class: "classes" }, classes.map((c) =>
      h("div", { class: c === "5xx" && counts[c] ? "bad" : null },
        h("dt", {}, c),
        h("dd", { testid: `backend-${name}-${c}` }, count(counts[c] || 0))))),
    poolView(name, pool));
}

function renderBackends(data, colors) {
  const pools = data.backends || {};
  const totals = data.totals?.by_backend || {};
  if (!changed("backends", [pools, totals])) return;
  const names = [...new Set([...Object.keys(pools), ...Object.keys(totals)])].sort();
  const container = byTestId("backend-cards");
  if (!names.length) {
    container.replaceChildren(h("p", { class: "empty" }, "No backends configured."));
    return;
  }
  container.replaceChildren(...names.map((n) => backendCard(n, pools[n] || {}, totals[n] || {}, colors.get(n))));
}

// --- routes -----------------------------------------------------------------

function weightsView(route, colors) {
  const entries = Object.entries(route.backends || {});
  const total = entries.reduce((sum, [, w]) => sum + w, 0);
  const text = h("span", { class: "weights-text", testid: `route-${route.name}-weights` },
    entries.map(([name, weight]) => `${name} ${weight}`).join(" · "));
  if (entries.length < 2 || total <= 0) return text;
  const bar = h("span", { class: "weight-bar", role: "img", "aria-label": entries.map(([n, w]) => `${n} ${Math.round((w / total) * 100)}%`).join(", ") },
    entries.map(([name, weight]) => {
      const part = h("span", { class: "weight-part", title: `${name}: ${weight} of ${total}` });
      part.style.width = `${(weight / total) * 100}%`;
      part.style.backgroundColor = colors.get(name) || "#64748b";
      return part;
    }));
  return [text, bar];
}

function routeRow(route, colors) {
  const n = route.name;
  const roles = route.roles || [];
  return h("tr", { testid: `route-${n}` },
    h("th", { scope: "row", testid: `route-${n}-name` }, n),
    h("td", {}, h("code", { testid: `route-${n}-prefix` }, route.prefix)),
    h("td", { class: "weights" }, weightsView(route, colors)),
    h("td", {},
      h("span", { class: `auth auth-${route.auth || "unset"}`, testid: `route-${n}-auth` }, orDash(route.auth)),
      roles.length ? h("span", { class: "roles", testid: `route-${n}-roles` }, roles.map((r) => h("span", { class: "chip" }, r))) : null),
    h("td", { testid: `route-${n}-throttle` }, orDash(route.throttle)),
    h("td", {}, h("span", { class: `toggle ${route.mirror ? "on" : "off"}`, testid: `route-${n}-mirror` }, route.mirror ? "on" : "off")),
    h("td", { testid: `route-${n}-version` }, orDash(route.version)));
}

function renderRoutes(routes, colors) {
  if (!changed("routes", [routes, [...colors]])) return;
  const body = byTestId("routes-body");
  if (!routes.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No routes configured.")));
    return;
  }
  body.replaceChildren(...routes.map((r) => routeRow(r, colors)));
}

// --- charts -----------------------------------------------------------------

const CHART = { width: 640, height: 230, top: 14, right: 16, bottom: 34, left: 52 };

function tickStep(max) {
  const rough = Math.max(1, max / 4);
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].find((m) => m * magnitude >= rough) * magnitude;
}

function chart(series, key, colors, label) {
  const timestamps = series.timestamps || [];
  const names = Object.keys(series.backends || {}).sort();
  const step = series.step_seconds || 5;
  if (!timestamps.length || !names.length) {
    return h("p", { class: "empty chart-empty", testid: `chart-${key}-empty` },
      `No traffic recorded yet. Points appear every ${step} s.`);
  }
  const { width, height, top, right, bottom, left } = CHART;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const end = timestamps[timestamps.length - 1];
  const start = end - step * ((series.points || timestamps.length) - 1);
  const span = Math.max(end - start, step);
  const x = (t) => left + ((t - start) / span) * plotW;
  let max = 0;
  for (const name of names) for (const v of series.backends[name][key] || []) max = Math.max(max, v);
  const stepY = tickStep(max);
  const ceiling = Math.max(stepY, Math.ceil(max / stepY) * stepY);
  const y = (v) => top + plotH - (v / ceiling) * plotH;

  const grid = [];
  for (let v = 0; v <= ceiling; v += stepY) {
    grid.push(s("g", { class: "tick" },
      s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: v ? "grid" : "axis" }),
      s("text", { x: left - 8, y: y(v) + 4, "text-anchor": "end" }, numbers.format(v))));
  }
  const xTicks = [];
  for (let t = end; t >= start; t -= 120) {
    xTicks.push(s("g", { class: "tick" },
      s("line", { x1: x(t), x2: x(t), y1: top + plotH, y2: top + plotH + 4, class: "axis" }),
      s("text", { x: x(t), y: top + plotH + 18, "text-anchor": t === end ? "end" : "middle" }, t === end ? `${clock(t)} UTC` : clock(t))));
  }
  const lines = names.map((name) => {
    const values = series.backends[name][key] || [];
    const offset = timestamps.length - values.length;
    const d = values.map((v, i) => `${i ? "L" : "M"}${x(timestamps[i + offset]).toFixed(1)},${y(v).toFixed(1)}`).join("");
    const sum = values.reduce((a, b) => a + b, 0);
    return s("path", { class: "line", d: d || `M${left},${y(0)}`, stroke: colors.get(name), "data-backend": name, testid: `chart-${key}-line-${name}` },
      s("title", {}, `${name}: ${numbers.format(sum)} ${key} in the window`));
  });
  const last = names.map((name) => {
    const values = series.backends[name][key] || [];
    if (!values.length) return null;
    return s("circle", { class: "last", cx: x(end), cy: y(values[values.length - 1]), r: 3, fill: colors.get(name) });
  });
  const quiet = max === 0
    ? s("text", { class: "quiet", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" }, key === "errors" ? "No 5xx in this window" : "No requests in this window")
    : null;
  return s("svg", {
    class: "chart-svg", viewBox: `0 0 ${width} ${height}`, role: "img", testid: `chart-${key}-svg`,
    "aria-label": `${label} per ${step} s interval, per backend, over the last ${Math.round(((series.points || timestamps.length) * step) / 60)} minutes; peak ${max}`,
  },
  s("text", { class: "axis-title", x: 12, y: top + plotH / 2, transform: `rotate(-90 12 ${top + plotH / 2})`, "text-anchor": "middle" }, `per ${step} s`),
  grid, xTicks, lines, last, quiet);
}

function renderCharts(series, colors) {
  if (!changed("series", [series, [...colors]])) return;
  const step = series.step_seconds || 5;
  const minutes = Math.round(((series.points || 0) * step) / 60);
  setText("series-window", minutes ? `last ${minutes} min · ${step} s intervals` : "");
  byTestId("chart-requests").replaceChildren(chart(series, "requests", colors, "Requests"));
  byTestId("chart-errors").replaceChildren(chart(series, "errors", colors, "5xx errors"));
  const names = Object.keys(series.backends || {}).sort();
  byTestId("chart-legend").replaceChildren(...names.map((n) => h("li", {}, swatch(colors.get(n)), n)));
}

// --- mirror -----------------------------------------------------------------

function diffLineClass(line) {
  if (line.startsWith(CUT_MARKER)) return "diff-cut";
  if (line.startsWith("+++") || line.startsWith("---")) return "diff-file";
  if (line.startsWith("@@")) return "diff-hunk";
  if (line.startsWith("+")) return "diff-add";
  if (line.startsWith("-")) return "diff-del";
  return "diff-context";
}

function diffView(diff, testid, truncated) {
  const lines = String(diff || "").split("\n");
  return h("pre", { class: "diff", testid, tabindex: 0, "data-truncated": truncated ? "true" : "false" },
    lines.map((line) => h("span", { class: diffLineClass(line) }, `${line}\n`)));
}

function mismatchView(route, m, index) {
  const status = Array.isArray(m.status) ? m.status : [];
  return h("li", { class: "mismatch", testid: `mirror-${route}-mismatch-${index}` },
    h("p", { class: "mismatch-head" },
      h("span", { class: "method" }, m.method || ""), " ",
      h("code", {}, m.path || ""),
      h("span", { class: "muted" },
        ` · ${m.served_by} ${orDash(status[0])} vs ${m.compared_with} ${orDash(status[1])}`,
        m.identity ? ` · ${m.identity}` : "",
        typeof m.shadow_ms === "number" ? ` · shadow ${m.shadow_ms} ms` : "",
        m.time ? ` · ${m.time}` : "",
        m.truncated === true ? " · diff cut (too long to keep whole)" : ""),
      Array.isArray(m.fields) && m.fields.length
        ? h("span", { class: "mismatch-fields", testid: `mirror-${route}-mismatch-${index}-fields` },
          `differs on ${m.fields.join(", ")}`,
          Array.isArray(m.noise_fields) && m.noise_fields.length ? h("span", { class: "muted" }, ` (and noise: ${m.noise_fields.join(", ")})`) : null)
        : null,
      m.request_id ? h("span", { class: "request-id muted" }, `request ${m.request_id}`) : null),
    diffView(m.diff, `mirror-${route}-diff-${index}`, m.truncated === true));
}

function rateLevel(rate) {
  if (typeof rate !== "number") return "unknown";
  if (rate >= RATE_OK) return "ok";
  return rate >= RATE_WARN ? "warn" : "bad";
}

function mirrorCard(route, stats) {
  const recent = [...(stats.recent_mismatches || [])].reverse();
  const shown = recent.slice(0, MAX_MISMATCHES);
  const rate = stats.match_rate;
  const fill = h("span", { class: "meter-fill" });
  fill.style.width = `${typeof rate === "number" ? rate * 100 : 0}%`;
  const figures = ["matches", "mismatches", "not_comparable", "errors", "skipped"];
  return h("article", { class: "mirror-card", testid: `mirror-${route}`, "aria-labelledby": `mirror-title-${route}` },
    h("header", { class: "card-head" },
      h("h3", { id: `mirror-title-${route}` }, route),
      h("span", { class: "rate-label muted" }, "match rate"),
      h("span", { class: `rate ${rateLevel(rate)}`, testid: `mirror-${route}-rate` }, percent(rate))),
    h("div", { class: `meter rate-meter ${rateLevel(rate)}`, role: "meter", "aria-label": `${route} match rate`, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": typeof rate === "number" ? Math.round(rate * 100) : 0 }, fill),
    h("dl", { class: "classes" }, figures.map((f) =>
      h("div", { class: f === "mismatches" && stats[f] ? "bad" : null },
        h("dt", {}, f.replace("_", " ")), h("dd", { testid: `mirror-${route}-${f}` }, count(stats[f] || 0))))),
    fieldsView(route, stats.fields),
    shown.length
      ? [h("h4", {}, `Latest mismatches${recent.length > shown.length ? ` (${shown.length} of ${recent.length})` : ""}`),
        h("ol", { class: "mismatches" }, shown.map((m, i) => mismatchView(route, m, i)))]
      : h("p", { class: "empty" }, "No mismatches recorded."));
}

// Per-field differences (gateway/shadow/noise.py): noise is left out of the match rate.
const MAX_FIELDS = 12;

function fieldExample(example) {
  if (!example) return "";
  const values = Array.isArray(example.values) ? example.values.join(" → ") : "";
  return `${example.pair || ""}${example.path ? ` · ${example.path}` : ""}: ${values}`;
}

function fieldsView(route, fields) {
  const names = Object.keys(fields || {}).slice(0, MAX_FIELDS);
  if (!names.length) return null;
  return [h("h4", {}, "Differing fields"),
    h("div", { class: "table-wrap fields-wrap" },
      h("table", { class: "fields", testid: `mirror-${route}-fields` },
        h("thead", {}, h("tr", {}, ["Field", "Verdict", "Cross-stack", "Same stack twice", "Example"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, names.map((name) => {
          const f = fields[name];
          // Per stack: second answers that differed / checks that looked at the field.
          const checks = f.self_checks || {};
          const selfCounts = Object.keys(checks).sort().map((b) => `${b} ${count((f.self_differences || {})[b] || 0)}/${count(checks[b])}`).join(" · ");
          const examples = f.examples || [];
          return h("tr", { testid: `mirror-${route}-field-${name}`, "data-verdict": f.verdict },
            h("td", {}, h("code", {}, name)),
            h("td", {}, h("span", { class: `verdict ${f.verdict}`, testid: `mirror-${route}-field-${name}-verdict` }, f.verdict),
              f.significant ? h("span", { class: "muted" }, " significant") : null),
            h("td", { class: "num" }, count(f.cross_differences)),
            h("td", {}, selfCounts || "–"),
            h("td", { class: "example" }, h("code", {}, fieldExample(examples[examples.length - 1]))));
        }))))];
}

function renderMirror(mirror) {
  if (!changed("mirror", mirror)) return;
  const routes = Object.keys(mirror);
  byTestId("mirror-routes").replaceChildren(...(routes.length
    ? routes.map((r) => mirrorCard(r, mirror[r]))
    : [h("p", { class: "empty" }, "No route mirrors traffic.")]));
}

// --- polling ----------------------------------------------------------------

function render(data) {
  const colors = backendColors(data);
  renderConfig(data.config || {}, data.generated_at);
  renderTotals(data.totals || {});
  renderBackends(data, colors);
  renderCharts(data.series || {}, colors);
  renderRoutes(data.routes || [], colors);
  renderMirror(data.mirror || {});
  document.getElementById("dashboard").setAttribute("aria-busy", "false");
  document.dispatchEvent(new CustomEvent("stackgate:stats", { detail: data })); // for rollouts.js and other sections
}

async function describeFailure(response) {
  let detail = "";
  try {
    detail = (await response.json())?.error?.message || "";
  } catch {
    detail = "";
  }
  const hint = response.status === 401 || response.status === 403 ? " (sign in as a consumer with an admin role)" : "";
  return `HTTP ${response.status} ${response.statusText}${detail ? `: ${detail}` : ""}${hint}`;
}

function showProblem(message) {
  const banner = byTestId("stats-error");
  const live = byTestId("live-status");
  document.getElementById("dashboard").classList.toggle("stale", !!message && !!lastSuccess);
  if (!message) {
    banner.hidden = true;
    banner.textContent = "";
    live.textContent = `live · updated ${lastSuccess.toLocaleTimeString()}`;
    live.className = "live ok";
    return;
  }
  const since = lastSuccess ? ` Showing data from ${lastSuccess.toLocaleTimeString()}.` : "";
  banner.textContent = `stats unavailable: ${message}.${since} Retrying every ${POLL_MS / 1000} s.`;
  banner.hidden = false;
  live.textContent = "offline";
  live.className = "live down";
}

async function poll() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(STATS_URL, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await describeFailure(response));
    const data = await response.json();
    render(data);
    lastSuccess = new Date();
    showProblem(null);
  } catch (error) {
    const message = error.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s` : error.message;
    showProblem(message);
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

poll();
