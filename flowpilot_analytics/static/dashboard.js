// The analytics page: calls the plugin's JSON routes on the same origin with the browser's own
// sign-in (its cookies), and writes every figure as text (no markup from data, no inline style).
"use strict";

const API = document.body.dataset.api;
const SVG = "http://www.w3.org/2000/svg";
const PERIODS = ["7d", "30d", "90d"];
const INTERVALS = ["day", "week"];
const CLOCKS = { wall: "wall clock", business: "business hours" };
const DEFAULTS = { period: "30d", interval: "day", clock: "wall", tz: "UTC", client: "" };
const state = { ...DEFAULTS };
// What the page says the metric is NOT, should an answer come without its definition.
const NOT_RECOVERED = "This is NOT 'minutes recovered' and not a time saving: any savings claim must " +
  "pair it with the manual baseline (the verbal-handoff stopwatch).";

// -- words ---------------------------------------------------------------------------------------

function formatSeconds(value) {
  // Rounded first, so that 899.7 s reads "15 min", never "14 min 60 s"; whole minutes drop "0 s".
  if (value === null || value === undefined) return "–";
  const seconds = Math.round(value);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) {
    const rest = seconds % 60;
    return rest ? `${Math.floor(seconds / 60)} min ${rest} s` : `${seconds / 60} min`;
  }
  const minutes = Math.round(value / 60);
  return minutes % 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes / 60} h`;
}

function percent(share, digits) {
  return `${(share * 100).toFixed(digits)} %`;
}

function formatInterval(interval) {
  // Whole percents, rounded outwards so that the shown interval contains the computed one.
  return `95 % CI ${Math.floor(interval[0] * 100)}–${Math.ceil(interval[1] * 100)} %`;
}

function count(n, singular, plural) {
  return `${n.toLocaleString("en-US")} ${n === 1 ? singular : plural || `${singular}s`}`;
}

function roleName(role) {
  return String(role).replace(/_/g, " ");
}

function hours(minutes) {
  return (minutes / 60).toFixed(1);
}

function clientName(id) {
  return id === null || id === undefined || id === "" ? "No client" : `Client ${id}`;
}

function technicianName(id) {
  return id === null || id === undefined ? "Unknown (no user on the push)" : `Technician ${id}`;
}

const localTime = (zone) => new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric",
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
const localDay = (zone) => new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric",
  month: "2-digit", day: "2-digit" });
const shortDate = new Intl.DateTimeFormat("en-US", { timeZone: "UTC", month: "short", day: "numeric" });

function dayLabel(isoDate) {
  return shortDate.format(new Date(`${isoDate}T00:00:00Z`));
}

function mondayOf(isoDate) {
  const day = new Date(`${isoDate}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() - ((day.getUTCDay() + 6) % 7));
  return day.toISOString().slice(0, 10);
}

function partialStart(windowEnd, zone, interval) {
  // The day (or week) the window ends in: "now" falls in it, so it is not over yet.
  const today = localDay(zone).format(new Date(windowEnd));
  return interval === "week" ? mondayOf(today) : today;
}

function definitionSentence(text) {
  // The API's own sentence that says what the figure is not (its definition's last sentence).
  const at = (text || "").indexOf("This is NOT");
  return at >= 0 ? text.slice(at).trim() : NOT_RECOVERED;
}

// -- calls and errors ----------------------------------------------------------------------------

async function call(path) {
  // Same origin, the browser's cookies; "no-cache" revalidates with the ETag, so a refresh reaches the
  // API (and its rate limit) and an unchanged answer comes back as a body-less 304.
  let response;
  try {
    response = await fetch(`${API}/${path}`, { credentials: "same-origin", cache: "no-cache",
      headers: { Accept: "application/json" } });
  } catch (error) {
    return { status: 0, body: {}, retryAfter: null };
  }
  const body = await response.json().catch(() => ({}));
  return { status: response.status, body, retryAfter: response.headers.get("Retry-After") };
}

function problem(result, what) {
  // What went wrong, in words a team lead can act on, and the card's state.
  const error = result.body.error || {};
  const details = error.details || {};
  if (result.status === 401) {
    return ["unauthenticated", "You are not signed in, or your sign-in has expired: sign in again, " +
      "then reload this page."];
  }
  if (result.status === 403) {
    const roles = details.allowed_roles || [];
    return ["forbidden", roles.length
      ? `${what} needs the role ${roleName(roles[0])} or above, so your role cannot see it. Ask an ` +
        "admin if you need it."
      : `${what} is not available for your role.`];
  }
  if (result.status === 409 && error.code === "no_business_hours") {
    return ["no_business_hours", "This account has no business hours yet, so there is nothing to show " +
      "on the business clock. Switch back to the wall clock, or ask a team admin to add the account's " +
      "business hours."];
  }
  if (result.status === 409) return ["conflict", `${what} cannot be shown now: ${error.message}`];
  if (result.status === 429) {
    const limit = details.limit ? ` (at most ${details.limit} per person)` : "";
    return ["rate_limited", `Too many refreshes of ${what}${limit}. It answers again in ` +
      `${result.retryAfter || details.retry_after_seconds || "a few"} s.`];
  }
  if (result.status === 0) return ["error", `${what} could not be reached: check the connection.`];
  return ["error", `${what} could not be loaded: ${error.message || "the analytics service did not " +
    "answer"}. Try again shortly.`];
}

function showError(card, result, what) {
  const [kind, text] = problem(result, what);
  card.dataset.state = kind;
  card.dataset.status = String(result.status);
  card.dataset.code = (result.body.error && result.body.error.code) || "";
  card.querySelector(".state-message").textContent =
    result.status ? `${text} (HTTP ${result.status})` : text;
}

function shown(card) {
  card.dataset.state = "ok";
  card.dataset.status = "200";
  card.dataset.code = "";
  card.querySelector(".state-message").textContent = "";
}

function setValue(id, text, raw) {
  const element = document.getElementById(id);
  element.textContent = text;
  element.dataset.raw = raw === null || raw === undefined ? "" : String(raw);
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function forClient(query) {
  // The picked client's sessions only (client=<id>), or every session with "All clients".
  return state.client ? `${query}&client=${encodeURIComponent(state.client)}` : query;
}

function showClient(id, client) {
  // Which client a card's figures are for: the request's, set only once its answer has arrived.
  const element = document.getElementById(id);
  element.dataset.client = client;
  element.textContent = client ? `· ${clientName(client)}` : "";
}

// -- charts --------------------------------------------------------------------------------------

function node(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function countStep(top) {
  // A round step for a count axis of about four ticks.
  const raw = Math.max(top, 1) / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return Math.max(1, step);
}

function secondsStep(top) {
  // A round step of time for a seconds axis of at most five ticks.
  const steps = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  return steps.find((s) => top / s <= 5) || Math.ceil(top / 5 / 86400) * 86400;
}

function scale(most, stepOf, plot) {
  // A vertical scale from 0 to the first whole step at or above ``most``: its step, top and the
  // y position of a value.
  const step = stepOf(most);
  const top = Math.ceil(most / step) * step;
  return { step, top, y: (v) => plot.bottom - (v / top) * (plot.bottom - plot.top) };
}

function columns(count, plot) {
  // ``count`` equal columns across the plot: their width and the x of each one's middle.
  const step = (plot.right - plot.left) / Math.max(count, 1);
  return { step, x: (i) => plot.left + i * step + step / 2 };
}

function frame(svg, width, height) {
  svg.replaceChildren();
  const id = `hatch-${svg.id}`;
  const pattern = node("pattern", { id, patternUnits: "userSpaceOnUse", width: 6, height: 6,
    patternTransform: "rotate(45)" });
  pattern.appendChild(node("rect", { width: 3, height: 6, class: "hatch-stripe" }));
  const defs = node("defs");
  defs.appendChild(pattern);
  svg.appendChild(defs);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return `url(#${id})`;
}

function axis(svg, plot, side, scaled, format, title) {
  // Ticks, labels and grid lines of a ``scale`` on the left or right of the plot.
  const x = side === "left" ? plot.left : plot.right;
  svg.appendChild(node("line", { class: "axis", x1: x, x2: x, y1: plot.top, y2: plot.bottom }));
  for (let value = 0; value <= scaled.top + 1e-9; value += scaled.step) {
    const y = scaled.y(value);
    if (side === "left") {
      svg.appendChild(node("line", { class: "grid", x1: plot.left, x2: plot.right, y1: y, y2: y }));
    }
    svg.appendChild(node("text", { x: side === "left" ? x - 6 : x + 6, y: y + 4,
      "text-anchor": side === "left" ? "end" : "start", class: "tick" }, format(value)));
  }
  svg.appendChild(node("text", { x: side === "left" ? plot.left : plot.right, y: plot.top - 8,
    "text-anchor": side === "left" ? "start" : "end", class: "axis-title" }, title));
}

function dates(svg, plot, starts, x, interval) {
  // The x axis: a date under every few points, always under the last one.
  svg.appendChild(node("line", { class: "axis", x1: plot.left, x2: plot.right, y1: plot.bottom,
    y2: plot.bottom }));
  const every = Math.max(1, Math.ceil(starts.length / 8));
  starts.forEach((start, i) => {
    if ((starts.length - 1 - i) % every !== 0) return;
    const label = interval === "week" ? `wk of ${dayLabel(start)}` : dayLabel(start);
    svg.appendChild(node("text", { x: x(i), y: plot.bottom + 16, "text-anchor": "middle", class: "tick" },
      label));
  });
}

function partialNote(svg, x, plot, interval) {
  svg.appendChild(node("text", { x, y: plot.top + 12, "text-anchor": "end", class: "partial-label" },
    interval === "week" ? "this week, so far" : "today, so far"));
}

function drawEscalationTrend(body) {
  // Median and p95 per day or week (lines, left scale), handoffs claimed (bars, right scale); the
  // day or week the window ends in is hatched: it is not over yet.
  const svg = document.getElementById("escalation-trend");
  const points = body.points;
  const width = 1000, height = 260;
  const plot = { left: 64, right: width - 44, top: 26, bottom: height - 30 };
  const hatch = frame(svg, width, height);
  const seconds = scale(Math.max(60, ...points.map((p) => p.p95_seconds || 0)), secondsStep, plot);
  const claimed = scale(Math.max(1, ...points.map((p) => p.n_handoffs_claimed)), countStep, plot);
  const { step, x } = columns(points.length, plot);
  const ySeconds = seconds.y, yClaimed = claimed.y;
  axis(svg, plot, "left", seconds, formatSeconds, "time to first action");
  axis(svg, plot, "right", claimed, String, "claimed");
  const partial = partialStart(body.window_end, body.timezone, body.interval);
  points.forEach((p, i) => {
    const isPartial = p.start === partial;
    const bar = node("rect", { class: `claimed${isPartial ? " partial" : ""}`, x: x(i) - step * 0.3,
      y: yClaimed(p.n_handoffs_claimed), width: step * 0.6,
      height: plot.bottom - yClaimed(p.n_handoffs_claimed) });
    if (isPartial) bar.setAttribute("fill", hatch);
    svg.appendChild(bar);
  });
  const line = (key, cls) => svg.appendChild(node("polyline", { class: cls, points: points
    .map((p, i) => (p[key] === null ? null : `${x(i).toFixed(1)},${ySeconds(p[key]).toFixed(1)}`))
    .filter((s) => s !== null).join(" ") }));
  line("median_seconds", "median");
  line("p95_seconds", "p95");
  points.forEach((p, i) => {
    const isPartial = p.start === partial;
    const classes = ["point", p.median_seconds === null ? "empty" : "", isPartial ? "partial" : ""];
    const mark = node("circle", { class: classes.join(" ").trim(), r: 3, cx: x(i),
      cy: ySeconds(p.median_seconds || 0), "data-start": p.start,
      "data-median": p.median_seconds === null ? "" : p.median_seconds,
      "data-p95": p.p95_seconds === null ? "" : p.p95_seconds, "data-claimed": p.n_handoffs_claimed,
      "data-partial": String(isPartial) });
    mark.appendChild(node("title", {}, `${dayLabel(p.start)}${isPartial ? " (so far)" : ""}: median ` +
      `${formatSeconds(p.median_seconds)}, 95th percentile ${formatSeconds(p.p95_seconds)}, ` +
      `${count(p.n_handoffs_claimed, "handoff")} claimed`));
    svg.appendChild(mark);
    if (isPartial) partialNote(svg, x(i) + step / 2, plot, body.interval);
  });
  dates(svg, plot, points.map((p) => p.start), x, body.interval);
  svg.dataset.points = String(points.length);
  svg.dataset.partial = points.some((p) => p.start === partial) ? partial : "";
}

function drawTrend(body) {
  // Sessions (bars), notes and time entries (lines) per local day, on one count scale; today is
  // hatched: it is not over yet.
  const svg = document.getElementById("trend");
  const rows = body.daily_trend;
  const width = 680, height = 240;
  const plot = { left: 48, right: width - 16, top: 26, bottom: height - 30 };
  const hatch = frame(svg, width, height);
  const perDay = scale(Math.max(1, ...rows.map((r) => Math.max(r.sessions, r.notes_posted, r.time_entries))),
    countStep, plot);
  const { step, x } = columns(rows.length, plot);
  const y = perDay.y;
  axis(svg, plot, "left", perDay, String, "per day");
  const today = partialStart(body.window_end, body.timezone, "day");
  rows.forEach((r, i) => {
    const isPartial = r.date === today;
    const bar = node("rect", { class: `sessions${isPartial ? " partial" : ""}`, x: x(i) - step * 0.35,
      y: y(r.sessions), width: step * 0.7, height: plot.bottom - y(r.sessions), "data-date": r.date,
      "data-partial": String(isPartial) });
    if (isPartial) bar.setAttribute("fill", hatch);
    bar.appendChild(node("title", {}, `${dayLabel(r.date)}${isPartial ? " (so far)" : ""}: ` +
      `${count(r.sessions, "session")}, ${count(r.notes_posted, "note")}, ` +
      `${count(r.time_entries, "time entry", "time entries")} (${r.minutes} min)`));
    svg.appendChild(bar);
    if (isPartial) partialNote(svg, x(i) + step / 2, plot, "day");
  });
  const line = (key, cls) => svg.appendChild(node("polyline", { class: cls,
    points: rows.map((r, i) => `${x(i).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ") }));
  line("notes_posted", "notes");
  line("time_entries", "entries");
  dates(svg, plot, rows.map((r) => r.date), x, "day");
  svg.dataset.days = String(rows.length);
  svg.dataset.partial = rows.some((r) => r.date === today) ? today : "";
}

function clearChart(id) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  svg.dataset.points = "0";
  svg.dataset.days = "0";
  svg.dataset.clock = "";
  svg.dataset.partial = "";
}

// -- escalations ---------------------------------------------------------------------------------

const WHAT_ESCALATIONS = "The escalation figures";

function showClock(clock, businessHours) {
  // Which clock the figures below are on: the answer's own `clock`, not the switch's.
  const element = document.getElementById("clock-shown");
  element.dataset.clock = clock || "";
  if (clock === "business") {
    const ids = businessHours ? businessHours.version_ids : [];
    const versions = ids.length ? `calendar version ${ids.join(", ")}` : "no handoff in this period";
    element.textContent = "Shown on the business clock: only the time inside the account's business " +
      `hours counts (${versions}).`;
  } else if (clock === "wall") {
    element.textContent = "Shown on the wall clock: every second from claim to first action counts, " +
      "nights, weekends and holidays included.";
  } else {
    element.textContent = "";
  }
}

function showAttainmentInterval(interval) {
  const element = document.getElementById("attainment-interval");
  element.textContent = interval ? `(${formatInterval(interval)})` : "";
  element.title = interval ? "95 % Wilson score interval of the share within the target" : "";
  element.dataset.low = interval ? String(interval[0]) : "";
  element.dataset.high = interval ? String(interval[1]) : "";
}

function showOpen(data) {
  // Claimed handoffs with no step after the claim yet: pending while inside the target, overdue after.
  const open = data ? data.n_handoffs_claimed - data.n_handoffs_with_action : null;
  setValue("no-action", open === null ? "–" : open.toLocaleString("en-US"), open);
  const split = document.getElementById("no-action-split");
  const target = data ? data.target : null;
  split.dataset.pending = target ? String(target.n_pending) : "";
  split.dataset.overdue = target ? String(target.n_overdue) : "";
  if (!data) split.textContent = "";
  else if (target) {
    split.textContent = `${target.n_pending} pending (still inside ${formatSeconds(target.seconds)}), ` +
      `${target.n_overdue} overdue (past it)`;
  } else split.textContent = open ? "waiting for a first step after the claim" : "every claim was acted on";
}

function clearEscalations() {
  // An error leaves no figure of an earlier answer (another clock, user or period) on the card.
  for (const id of ["median", "p95", "avg", "claimed", "with-action", "attainment"]) setValue(id, "–", null);
  showOpen(null);
  showAttainmentInterval(null);
  document.getElementById("target-label").textContent = "Within target";
  document.getElementById("target-judged").textContent = "";
  showClock(null, null);
}

function explainEscalations(data) {
  const definition = "How it is measured: for each handoff a senior engineer claimed in this period, " +
    "the time from the claim to the first step recorded in the same AI session after it. The median, " +
    "95th percentile and average are over the claimed handoffs that have such a step; a claimed " +
    "handoff with no step yet is counted as \"claimed, no action yet\" (pending while it is still " +
    "inside the response target, overdue once past it). A handoff nobody has claimed yet is not in " +
    "these figures. On the business clock only the time inside the account's business hours counts.";
  document.getElementById("metric-definition").textContent =
    `${definition} ${definitionSentence(data ? data.metric_definition : "")}`;
}

async function loadEscalations() {
  const card = document.getElementById("escalations");
  card.dataset.clockRequested = state.clock;
  const client = state.client;
  const result = await call(forClient(`escalations?period=${state.period}&clock=${state.clock}`));
  if (result.status !== 200) {
    clearEscalations();
    card.dataset.clock = "";
    showClient("escalations-client", "");
    return showError(card, result, WHAT_ESCALATIONS);
  }
  const data = result.body;
  setValue("median", formatSeconds(data.median_seconds), data.median_seconds);
  setValue("p95", formatSeconds(data.p95_seconds), data.p95_seconds);
  setValue("avg", formatSeconds(data.avg_seconds), data.avg_seconds);
  setValue("claimed", data.n_handoffs_claimed.toLocaleString("en-US"), data.n_handoffs_claimed);
  setValue("with-action", data.n_handoffs_with_action.toLocaleString("en-US"), data.n_handoffs_with_action);
  showOpen(data);
  const target = data.target;
  setValue("attainment", target && target.attainment !== null ? percent(target.attainment, 1) : "–",
    target ? target.attainment : null);
  showAttainmentInterval(target ? target.attainment_interval : null);
  document.getElementById("target-label").textContent = target
    ? `Within ${formatSeconds(target.seconds)}${data.clock === "business" ? " of business time" : ""}`
    : "No response target";
  document.getElementById("target-judged").textContent = target
    ? `${target.n_within} of ${count(target.n_within + target.n_breached, "handoff")}; pending ones apart`
    : "";
  explainEscalations(data);
  showClock(data.clock, data.business_hours);
  card.dataset.period = data.period;
  card.dataset.clock = data.clock;
  showClient("escalations-client", client);
  shown(card);
}

function fillPicker(clients) {
  // "All clients" and the clients of this period's handoffs; the picked one stays listed.
  const select = document.getElementById("client");
  const ids = [...new Set([...clients, ...(state.client ? [state.client] : [])])]
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const all = document.createElement("option");
  all.value = "";
  all.textContent = "All clients";
  const options = [all];
  for (const id of ids) {
    const option = document.createElement("option");
    option.value = id;
    option.textContent = clientName(id);
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = state.client;
}

async function loadByClient() {
  // Every client's figures side by side (group_by=client), whichever client is picked; the picked
  // one's row is marked. Sessions without a client are the "No client" row.
  const table = document.getElementById("by-client");
  const body = table.querySelector("tbody");
  const result = await call(`escalations?period=${state.period}&clock=${state.clock}&group_by=client`);
  body.replaceChildren();
  const caption = document.getElementById("by-client-clock");
  if (result.status !== 200) {  // the card's message (from the figures' call) says why
    table.dataset.rows = "0";
    table.dataset.clock = "";
    caption.textContent = "";
    return [];
  }
  const groups = result.body.groups || [];
  const withTarget = groups.find((group) => group.target);
  document.getElementById("by-client-target").textContent =
    withTarget ? `Within ${formatSeconds(withTarget.target.seconds)}` : "Within target";
  for (const group of groups) {
    const row = document.createElement("tr");
    const attainment = group.target ? group.target.attainment : null;
    row.dataset.client = group.client === null ? "" : String(group.client);
    row.dataset.claimed = String(group.n_handoffs_claimed);
    row.dataset.withAction = String(group.n_handoffs_with_action);
    row.dataset.median = group.median_seconds === null ? "" : String(group.median_seconds);
    row.dataset.attainment = attainment === null ? "" : String(attainment);
    cell(row, clientName(group.client));
    cell(row, String(group.n_handoffs_claimed));
    cell(row, String(group.n_handoffs_with_action));
    cell(row, String(group.n_handoffs_claimed - group.n_handoffs_with_action));
    cell(row, formatSeconds(group.median_seconds));
    cell(row, attainment === null ? "–" : percent(attainment, 1));
    if (state.client && row.dataset.client === state.client) row.classList.add("picked");
    body.appendChild(row);
  }
  table.dataset.rows = String(groups.length);
  table.dataset.clock = result.body.clock;
  caption.textContent = `(${CLOCKS[result.body.clock]}, every client of this period's handoffs)`;
  const clients = groups.filter((g) => g.client !== null).map((g) => String(g.client));
  fillPicker(clients);
  return clients;
}

async function loadEscalationTrend() {
  const svg = document.getElementById("escalation-trend");
  const result = await call(forClient(`escalations/trend?period=${state.period}` +
    `&tz=${encodeURIComponent(state.tz)}&interval=${state.interval}&clock=${state.clock}`));
  if (result.status !== 200) {  // the card's message (from the figures' call) says why
    clearChart("escalation-trend");
    document.getElementById("escalation-trend-zone").textContent = "";
    return;
  }
  drawEscalationTrend(result.body);
  document.getElementById("escalation-trend-zone").textContent =
    `(per ${result.body.interval}, dates in ${result.body.timezone}, ${CLOCKS[result.body.clock]})`;
  svg.dataset.interval = result.body.interval;
  svg.dataset.clock = result.body.clock;
}

async function loadHandoffs() {
  // The drill-down: the newest claims behind the figures, on the same clock.
  const table = document.getElementById("handoffs");
  const body = table.querySelector("tbody");
  const result = await call(forClient(`escalations/handoffs?period=${state.period}&limit=10&clock=${state.clock}`));
  body.replaceChildren();
  const caption = document.getElementById("handoffs-clock");
  if (result.status !== 200) {
    table.dataset.rows = "0";
    table.dataset.clock = "";
    caption.textContent = "";
    return;
  }
  const format = localTime(state.tz);
  for (const item of result.body.items) {
    const row = document.createElement("tr");
    row.dataset.handoff = String(item.handoff_id);
    row.dataset.seconds = item.seconds === null ? "" : String(item.seconds);
    row.dataset.wallSeconds = item.wall_seconds === null ? "" : String(item.wall_seconds);
    cell(row, format.format(new Date(item.claimed_at)));
    cell(row, item.first_action_at ? format.format(new Date(item.first_action_at)) : "claimed, no action yet");
    cell(row, formatSeconds(item.seconds));
    cell(row, formatSeconds(item.wall_seconds));
    if (!item.first_action_at) row.classList.add("open");
    if (item.seconds !== null && item.seconds !== item.wall_seconds) row.classList.add("discounted");
    body.appendChild(row);
  }
  table.dataset.rows = String(result.body.items.length);
  table.dataset.clock = result.body.clock;
  caption.textContent = `(newest claims, ${CLOCKS[result.body.clock]}, times in ${state.tz})`;
}

// -- savings -------------------------------------------------------------------------------------

function signed(seconds, fewer, more) {
  // A difference (baseline minus FlowPilot) in words: "17 min 5 s shorter", "2 min longer".
  if (seconds === 0) return "no difference";
  return `${formatSeconds(Math.abs(seconds))} ${seconds > 0 ? fewer : more}`;
}

function span(interval, fewer, more) {
  // An interval of a difference in words, the smaller magnitude first when both ends share a sign.
  const [low, high] = interval;
  if (low >= 0) return `${formatSeconds(low)} to ${formatSeconds(high)} ${fewer}`;
  if (high <= 0) return `${formatSeconds(-high)} to ${formatSeconds(-low)} ${more}`;
  return `from ${formatSeconds(-low)} ${more} to ${formatSeconds(high)} ${fewer}`;
}

function showSpan(id, interval, confidence, fewer, more) {
  const element = document.getElementById(id);
  const shownPercent = interval ? Number((confidence * 100).toPrecision(10)) : null;
  element.textContent = interval ? `${shownPercent} % CI ${span(interval, fewer, more)}` : "";
  element.dataset.low = interval ? String(interval[0]) : "";
  element.dataset.high = interval ? String(interval[1]) : "";
}

function showSavingsClock() {
  // Savings compare with a stopwatch, which ran on the wall clock: the card never follows the switch.
  const note = document.getElementById("savings-clock");
  note.dataset.clockRequested = state.clock;
  note.textContent = state.clock === "business"
    ? "Always on the wall clock, even with business hours selected above: the stopwatch baseline was " +
      "timed on the wall clock, so both sides are compared in wall-clock time."
    : "On the wall clock, like the stopwatch baseline: every second from handoff to first action counts.";
}

function showSavingsClient() {
  // The savings card has no client filter: the stopwatch baseline was not timed per client.
  const note = document.getElementById("savings-client");
  note.dataset.client = state.client;
  note.textContent = state.client
    ? `All clients, not only ${clientName(state.client)}: the stopwatch baseline was not timed per client.`
    : "";
}

function showVerdict(kind, text) {
  const verdict = document.getElementById("savings-verdict");
  verdict.dataset.kind = kind;
  verdict.textContent = text;
}

function clearSavings() {
  // An error leaves no figure of an earlier answer (another user or period) on the card.
  for (const id of ["savings-baseline-median", "savings-product-median", "savings-difference",
    "savings-total"]) setValue(id, "–", null);
  for (const id of ["savings-baseline-n", "savings-product-n"]) setValue(id, "", null);
  for (const id of ["savings-difference-interval", "savings-total-interval"]) showSpan(id, null);
  showVerdict("", "");
  document.getElementById("savings-method").textContent = "";
}

async function loadSavings() {
  const card = document.getElementById("savings");
  showSavingsClock();
  showSavingsClient();
  const result = await call(`escalations/savings?period=${state.period}`);
  if (result.status !== 200) {
    clearSavings();
    card.dataset.claim = "";
    return showError(card, result, "The savings card");
  }
  const data = result.body;
  const baseline = data.baseline, product = data.in_product;
  setValue("savings-baseline-median", formatSeconds(baseline.median_seconds), baseline.median_seconds);
  setValue("savings-baseline-n", baseline.n
    ? `${count(baseline.n, "stopwatch sample")}, ${baseline.first_measured_at.slice(0, 10)} to ` +
      baseline.last_measured_at.slice(0, 10)
    : "no stopwatch sample", baseline.n);
  setValue("savings-product-median", formatSeconds(product.median_seconds), product.median_seconds);
  setValue("savings-product-n", `${count(product.n, "handoff")} with a first action, ` +
    `${data.window_start.slice(0, 10)} to ${data.window_end.slice(0, 10)}`, product.n);
  const difference = data.difference, extrapolated = data.extrapolated;
  const confidence = difference ? difference.confidence : null;
  setValue("savings-difference", difference ? signed(difference.median_seconds, "shorter", "longer") : "–",
    difference ? difference.median_seconds : null);
  showSpan("savings-difference-interval", difference ? difference.median_interval : null, confidence,
    "shorter", "longer");
  setValue("savings-total", extrapolated ? signed(extrapolated.total_seconds, "less", "more") : "–",
    extrapolated ? extrapolated.total_seconds : null);
  showSpan("savings-total-interval", extrapolated ? extrapolated.total_interval : null, confidence,
    "less", "more");
  if (data.claim !== null) showVerdict("claim", data.claim);
  else showVerdict("reason", `No savings claim: ${data.reason}.`);
  document.getElementById("savings-method").textContent =
    difference ? `Intervals: ${difference.method}.` : "";
  card.dataset.claim = data.claim !== null ? "yes" : "no";
  card.dataset.period = data.period;
  shown(card);
}

// -- PSA documentation ---------------------------------------------------------------------------

function drawFunnel(funnel) {
  const stages = [["sessions", "Sessions", null], ["linked", "Linked to a ticket", "linked_rate"],
    ["doc_pushed", "Documentation pushed", "doc_pushed_rate"],
    ["time_entry_logged", "Time logged", "time_entry_logged_rate"]];
  const top = Math.max(funnel.sessions, 1);
  const rows = stages.map(([key, label, rate]) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.stage = key;
    row.dataset.count = String(funnel[key]);
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * funnel[key] / top).toFixed(1)}%`;  // CSSOM: allowed under the CSP
    const figure = document.createElement("span");
    const strong = document.createElement("b");
    strong.textContent = count(funnel[key], "session");
    const share = document.createElement("span");
    share.className = "rate";
    share.textContent = rate && funnel[rate] !== null ? ` ${percent(funnel[rate], 1)} of the row above` : "";
    figure.append(strong, share);
    row.append(name, bar, figure);
    return row;
  });
  document.getElementById("funnel").replaceChildren(...rows);
}

function showTimeEntries(funnel, entries) {
  // Sessions with time logged and time entries are two counts: a session can have several entries.
  const element = document.getElementById("time-entries");
  element.dataset.sessions = String(funnel.time_entry_logged);
  element.dataset.entries = String(entries.count);
  element.textContent = `${count(funnel.time_entry_logged, "session")} had time logged, in ` +
    `${count(entries.count, "time entry", "time entries")} (a session can have more than one): ` +
    `${entries.total_hours} h in all, ${hours(entries.billable_minutes)} h billable, ` +
    `${hours(entries.non_billable_minutes)} h not billable, ${hours(entries.unclassified_minutes)} h ` +
    "where the push did not say.";
}

function fillTechnicians(groups) {
  // Who pushed the period's notes and time entries (group_by=technician), for the picked client.
  const table = document.getElementById("by-technician");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const group of groups) {
    const row = document.createElement("tr");
    const entries = group.time_entries;
    row.dataset.technician = group.technician === null ? "" : group.technician;
    row.dataset.billable = String(entries.billable_minutes);
    cell(row, technicianName(group.technician));
    cell(row, String(group.notes_posted));
    cell(row, String(entries.count));
    cell(row, hours(entries.billable_minutes));
    cell(row, hours(entries.non_billable_minutes));
    cell(row, hours(entries.unclassified_minutes));
    body.appendChild(row);
  }
  table.dataset.rows = String(groups.length);
}

async function loadPsa() {
  // One call: the totals, the funnel and the trend come with the technicians' groups.
  const card = document.getElementById("psa");
  const client = state.client;
  const result = await call(forClient(`psa-metrics?period=${state.period}` +
    `&tz=${encodeURIComponent(state.tz)}&group_by=technician`));
  if (result.status !== 200) {
    showClient("psa-client", "");
    document.getElementById("funnel").replaceChildren();
    document.getElementById("time-entries").textContent = "";
    fillTechnicians([]);
    clearChart("trend");
    return showError(card, result, "PSA documentation");
  }
  const data = result.body;
  drawFunnel(data.funnel);
  drawTrend(data);
  showTimeEntries(data.funnel, data.time_entries);
  fillTechnicians(data.groups || []);
  document.getElementById("trend-zone").textContent = `(dates in ${data.timezone})`;
  card.dataset.period = data.period;
  showClient("psa-client", client);
  shown(card);
}

// -- the page ------------------------------------------------------------------------------------

function readState() {
  // The choices are in the page's address, so a link or a reload shows the same view.
  const query = new URLSearchParams(location.search);
  const pick = (key, allowed) => (allowed.includes(query.get(key)) ? query.get(key) : DEFAULTS[key]);
  state.period = pick("period", PERIODS);
  state.interval = pick("interval", INTERVALS);
  state.clock = pick("clock", Object.keys(CLOCKS));
  state.tz = query.get("tz") || DEFAULTS.tz;
  state.client = query.get("client") || "";
}

function writeState() {
  const query = new URLSearchParams();
  for (const key of ["period", "interval", "clock", "tz", "client"]) {
    if (state[key] !== DEFAULTS[key]) query.set(key, state[key]);
  }
  const search = query.toString();
  history.replaceState(null, "", search ? `?${search}` : location.pathname);
}

function showSwitches() {
  const toggle = (selector, key) => document.querySelectorAll(selector).forEach((button) => {
    const on = button.dataset[key] === state[key];
    button.classList.toggle("active", on);
    button.setAttribute("aria-pressed", String(on));
  });
  toggle("[data-period]", "period");
  toggle("[data-interval]", "interval");
  toggle("#clock-switch [data-clock]", "clock");
  const zone = document.getElementById("zone");
  if (![...zone.options].some((option) => option.value === state.tz)) {
    const option = document.createElement("option");
    option.textContent = state.tz;
    zone.appendChild(option);
  }
  zone.value = state.tz;
}

async function refresh() {
  for (const id of ["escalations", "savings", "psa"]) document.getElementById(id).dataset.state = "loading";
  writeState();
  showSwitches();
  await Promise.all([loadEscalations(), loadEscalationTrend(), loadHandoffs(), loadByClient(), loadSavings(),
    loadPsa()]);
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

function choose(key, value) {
  state[key] = value;
  refresh();
}

async function start() {
  readState();
  try {
    Intl.DateTimeFormat("en-US", { timeZone: state.tz });
  } catch (error) {
    state.tz = DEFAULTS.tz;  // a zone the browser does not know
  }
  if (state.client) {
    // a client of another account (a link, another sign-in) is dropped: back to all clients
    const clients = await loadByClient();
    if (!clients.includes(state.client)) state.client = "";
  }
  explainEscalations(null);
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
  for (const button of document.querySelectorAll("[data-period]")) {
    button.addEventListener("click", () => choose("period", button.dataset.period));
  }
  for (const button of document.querySelectorAll("[data-interval]")) {
    button.addEventListener("click", () => choose("interval", button.dataset.interval));
  }
  for (const button of document.querySelectorAll("#clock-switch [data-clock]")) {
    button.addEventListener("click", () => choose("clock", button.dataset.clock));
  }
  const clientSelect = document.getElementById("client");
  clientSelect.addEventListener("change", () => choose("client", clientSelect.value));
  const zone = document.getElementById("zone");
  zone.addEventListener("change", () => choose("tz", zone.value));
  document.getElementById("refresh").addEventListener("click", refresh);
  await refresh();
}

start();
