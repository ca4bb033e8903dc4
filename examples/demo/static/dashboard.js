// The demo's analytics page: it calls the plugin's real JSON API with the chosen demo user's token.
"use strict";
const API = "/api/v1/analytics/flowpilot";
const state = { period: "30d", zone: "UTC", interval: "day", clock: "wall", user: null, client: "" };
// The signed-in account's clients (id -> name), from the host's own list (GET /demo/clients).
const clientNames = new Map();
const CLOCKS = { wall: "wall clock", business: "business hours" };

function formatSeconds(value) {
  // Rounded first, so that 899.7 s reads "15 min 0 s", never "14 min 60 s".
  if (value === null || value === undefined) return "–";
  const seconds = Math.round(value);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  const minutes = Math.round(value / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function percent(share, digits) {
  return `${(share * 100).toFixed(digits)} %`;
}

function formatInterval(interval) {
  // Whole percents, rounded outwards so that the shown interval contains the computed one.
  return `95 % CI ${Math.floor(interval[0] * 100)}–${Math.ceil(interval[1] * 100)} %`;
}

const localTime = (zone) => new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric",
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });

function setValue(id, text, raw) {
  const element = document.getElementById(id);
  element.textContent = text;
  element.dataset.raw = raw === null || raw === undefined ? "" : String(raw);
}

function clientName(id) {
  if (id === null || id === undefined || id === "") return "No client";
  return clientNames.get(String(id)) || `Client ${id}`;
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

async function call(path) {
  // "no-cache": revalidate with the ETag every time, so a refresh reaches the API (and its rate limit);
  // an unchanged answer comes back as a body-less 304 and the browser reuses its copy.
  const response = await fetch(`${API}/${path}`,
    { headers: { Authorization: `Bearer ${state.user}` }, cache: "no-cache" });
  const body = await response.json().catch(() => ({}));
  return { status: response.status, body, retryAfter: response.headers.get("Retry-After") };
}

function showError(card, result) {
  const code = (result.body.error && result.body.error.code) || "error";
  const states = { 401: "unauthenticated", 403: "forbidden", 429: "rate_limited" };
  card.dataset.state = code === "no_business_hours" ? code : states[result.status] || "error";
  let text = `${result.status}: ${(result.body.error && result.body.error.message) || "Request failed."}`;
  if (result.status === 429) text += ` Retry in ${result.retryAfter} s.`;
  if (code === "no_business_hours") {
    text = `${result.status}: This account has no business hours yet, so there is nothing to show on the ` +
      "business clock. Switch back to the wall clock, or ask a team admin to add the account's business " +
      "hours (POST business-hours).";
  }
  card.querySelector(".state-message").textContent = text;
  card.dataset.code = code;
}

function showClock(clock, businessHours) {
  // Which clock the figures below are on: the answer's own `clock`, not the switch's.
  const shown = document.getElementById("clock-shown");
  shown.dataset.clock = clock || "";
  if (clock === "business") {
    const ids = businessHours ? businessHours.version_ids : [];
    const versions = ids.length ? `calendar version ${ids.join(", ")}` : "no handoff in this period";
    shown.textContent = `Shown on the business clock: only the seconds inside the account's business ` +
      `hours count (${versions}).`;
  } else if (clock === "wall") {
    shown.textContent = "Shown on the wall clock: every second from claim to first action counts, " +
      "nights, weekends and holidays included.";
  } else {
    shown.textContent = `Requested: ${CLOCKS[state.clock]}.`;
  }
}

function clearEscalations() {
  // An error leaves no figure of an earlier answer (another clock, user or period) on the card.
  for (const id of ["median", "p95", "avg", "claimed", "with-action", "attainment"]) setValue(id, "–", null);
  showAttainmentInterval(null);
  document.getElementById("target-label").textContent = "Within target";
  document.getElementById("target-open").textContent = "";
  showClock(null, null);
}

function showAttainmentInterval(interval) {
  const element = document.getElementById("attainment-interval");
  element.textContent = interval ? `(${formatInterval(interval)})` : "";
  element.title = interval ? "95 % Wilson score interval of the attainment" : "";
  element.dataset.low = interval ? String(interval[0]) : "";
  element.dataset.high = interval ? String(interval[1]) : "";
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
    return showError(card, result);
  }
  const data = result.body;
  setValue("median", formatSeconds(data.median_seconds), data.median_seconds);
  setValue("p95", formatSeconds(data.p95_seconds), data.p95_seconds);
  setValue("avg", formatSeconds(data.avg_seconds), data.avg_seconds);
  setValue("claimed", String(data.n_handoffs_claimed), data.n_handoffs_claimed);
  setValue("with-action", String(data.n_handoffs_with_action), data.n_handoffs_with_action);
  const target = data.target;
  setValue("attainment", target && target.attainment !== null ? percent(target.attainment, 1) : "–",
    target ? target.attainment : null);
  showAttainmentInterval(target ? target.attainment_interval : null);
  document.getElementById("target-label").textContent = target
    ? `Within ${formatSeconds(target.seconds)}${data.clock === "business" ? " of business time" : ""}`
    : "No response target";
  document.getElementById("target-open").textContent =
    target ? `${target.n_pending} pending, ${target.n_overdue} overdue` : "";
  document.getElementById("metric-definition").textContent = data.metric_definition;
  showClock(data.clock, data.business_hours);
  card.dataset.period = data.period;
  card.dataset.clock = data.clock;
  showClient("escalations-client", client);
  card.dataset.state = "ok";
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
    return;
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
    cell(row, formatSeconds(group.median_seconds));
    cell(row, attainment === null ? "–" : percent(attainment, 1));
    if (state.client && row.dataset.client === state.client) row.classList.add("picked");
    body.appendChild(row);
  }
  table.dataset.rows = String(groups.length);
  table.dataset.clock = result.body.clock;
  caption.textContent = `(${CLOCKS[result.body.clock]}, every client of this period's handoffs)`;
}

function drawEscalationTrend(points) {
  // Median and p95 per day or week (lines, left scale), handoffs claimed (bars, right scale).
  const svg = document.getElementById("escalation-trend");
  const width = 640, height = 200, pad = 30;
  const topSeconds = Math.max(60, ...points.map((p) => p.p95_seconds || 0));
  const topClaimed = Math.max(1, ...points.map((p) => p.n_handoffs_claimed));
  const step = (width - 2 * pad) / Math.max(points.length, 1);
  const x = (i) => pad + i * step + step / 2;
  const ySeconds = (v) => height - pad - (v / topSeconds) * (height - 2 * pad);
  const yClaimed = (v) => height - pad - (v / topClaimed) * (height - 2 * pad) * 0.5;
  const bars = points.map((p, i) => `<rect class="claimed" x="${(x(i) - step * 0.3).toFixed(1)}"` +
    ` y="${yClaimed(p.n_handoffs_claimed).toFixed(1)}" width="${(step * 0.6).toFixed(1)}"` +
    ` height="${(height - pad - yClaimed(p.n_handoffs_claimed)).toFixed(1)}"/>`);
  const line = (key, cls) => {
    const segments = points.map((p, i) => (p[key] === null ? null : `${x(i).toFixed(1)},${ySeconds(p[key]).toFixed(1)}`))
      .filter((s) => s !== null);
    return `<polyline class="${cls}" points="${segments.join(" ")}"/>`;
  };
  const marks = points.map((p, i) => `<circle class="point${p.median_seconds === null ? " empty" : ""}"` +
    ` r="2.5" cx="${x(i).toFixed(1)}"` +
    ` cy="${ySeconds(p.median_seconds || 0).toFixed(1)}" data-start="${p.start}"` +
    ` data-median="${p.median_seconds === null ? "" : p.median_seconds}"` +
    ` data-p95="${p.p95_seconds === null ? "" : p.p95_seconds}" data-claimed="${p.n_handoffs_claimed}">` +
    `<title>${p.start}: median ${formatSeconds(p.median_seconds)}, p95 ${formatSeconds(p.p95_seconds)}, ` +
    `${p.n_handoffs_claimed} claimed</title></circle>`);
  const labels = points.filter((_, i) => i % Math.ceil(points.length / 8) === 0).map((p) =>
    `<text x="${x(points.indexOf(p)).toFixed(1)}" y="${height - 8}" font-size="10" text-anchor="middle" fill="#6b7385">${p.start.slice(5)}</text>`);
  svg.innerHTML = bars.join("") + line("median_seconds", "median") + line("p95_seconds", "p95") + marks.join("") +
    labels.join("") + `<text x="${pad}" y="14" font-size="10" fill="#6b7385">top ${formatSeconds(topSeconds)}</text>`;
  svg.dataset.points = String(points.length);
}

async function loadEscalationTrend() {
  const svg = document.getElementById("escalation-trend");
  const result = await call(forClient(`escalations/trend?period=${state.period}` +
    `&tz=${encodeURIComponent(state.zone)}&interval=${state.interval}&clock=${state.clock}`));
  if (result.status !== 200) {  // the card's message (from the figures' call) says why
    svg.innerHTML = "";
    svg.dataset.points = "0";
    svg.dataset.clock = "";
    document.getElementById("escalation-trend-zone").textContent = "";
    return;
  }
  drawEscalationTrend(result.body.points);
  document.getElementById("escalation-trend-zone").textContent =
    `(per ${result.body.interval}, ${result.body.timezone}, ${CLOCKS[result.body.clock]})`;
  svg.dataset.interval = result.body.interval;
  svg.dataset.clock = result.body.clock;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
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
  const format = localTime(state.zone);
  for (const item of result.body.items) {
    const row = document.createElement("tr");
    row.dataset.handoff = String(item.handoff_id);
    row.dataset.seconds = item.seconds === null ? "" : String(item.seconds);
    row.dataset.wallSeconds = item.wall_seconds === null ? "" : String(item.wall_seconds);
    cell(row, format.format(new Date(item.claimed_at)));
    cell(row, item.first_action_at ? format.format(new Date(item.first_action_at)) : "no action yet");
    cell(row, formatSeconds(item.seconds));
    cell(row, formatSeconds(item.wall_seconds));
    if (item.seconds !== null && item.seconds !== item.wall_seconds) row.classList.add("discounted");
    body.appendChild(row);
  }
  table.dataset.rows = String(result.body.items.length);
  table.dataset.clock = result.body.clock;
  caption.textContent = `(newest claims, ${CLOCKS[result.body.clock]}, times in ${state.zone})`;
}

function signed(seconds, fewer, more) {
  // A difference (baseline minus FlowPilot) in words: "17 min 5 s shorter", "2 min 0 s longer".
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

function count(n, noun) {
  return `${n.toLocaleString("en-US")} ${noun}${n === 1 ? "" : "s"}`;
}

function showSpan(id, interval, confidence, fewer, more) {
  const element = document.getElementById(id);
  const percent = interval ? Number((confidence * 100).toPrecision(10)) : null;
  element.textContent = interval ? `${percent} % CI ${span(interval, fewer, more)}` : "";
  element.dataset.low = interval ? String(interval[0]) : "";
  element.dataset.high = interval ? String(interval[1]) : "";
}

function showSavingsClock() {
  // Savings compare with a stopwatch, which ran on the wall clock: the card never follows the switch.
  const note = document.getElementById("savings-clock");
  note.dataset.clockRequested = state.clock;
  note.textContent = state.clock === "business"
    ? "Always on the wall clock, even with the business clock selected above: the stopwatch baseline " +
      "was timed on the wall clock, so both sides are compared in wall-clock seconds."
    : "On the wall clock, like the stopwatch baseline: every second from handoff to first action counts.";
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
  const result = await call(`escalations/savings?period=${state.period}`);
  if (result.status !== 200) {
    clearSavings();
    card.dataset.claim = "";
    return showError(card, result);
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
  card.dataset.state = "ok";
}

function drawFunnel(funnel) {
  const stages = [["sessions", "Sessions", null], ["linked", "Linked to a ticket", "linked_rate"],
    ["doc_pushed", "Documentation pushed", "doc_pushed_rate"],
    ["time_entry_logged", "Time entry logged", "time_entry_logged_rate"]];
  const top = Math.max(funnel.sessions, 1);
  document.getElementById("funnel").innerHTML = stages.map(([key, label, rate]) => {
    const share = rate && funnel[rate] !== null ? `${(funnel[rate] * 100).toFixed(1)} % of previous` : "";
    return `<div class="bar-row" data-stage="${key}" data-count="${funnel[key]}"><span>${label}</span>` +
      `<div class="bar" style="width:${(100 * funnel[key] / top).toFixed(1)}%"></div>` +
      `<span><b>${funnel[key]}</b> <span class="rate">${share}</span></span></div>`;
  }).join("");
}

function drawTrend(rows) {
  const svg = document.getElementById("trend");
  const width = 640, height = 220, pad = 28;
  const top = Math.max(1, ...rows.map((r) => Math.max(r.sessions, r.notes_posted, r.time_entries)));
  const step = (width - 2 * pad) / Math.max(rows.length, 1);
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);
  const x = (i) => pad + i * step + step / 2;
  const bars = rows.map((r, i) => `<rect class="sessions" x="${(x(i) - step * 0.35).toFixed(1)}" y="${y(r.sessions).toFixed(1)}"` +
    ` width="${(step * 0.7).toFixed(1)}" height="${(height - pad - y(r.sessions)).toFixed(1)}"><title>${r.date}: ` +
    `${r.sessions} sessions, ${r.notes_posted} notes, ${r.time_entries} time entries (${r.minutes} min)</title></rect>`);
  const line = (key, cls) => `<polyline class="${cls}" points="${rows.map((r, i) => `${x(i).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ")}"/>`;
  const labels = rows.filter((_, i) => i % Math.ceil(rows.length / 8) === 0).map((r) =>
    `<text x="${x(rows.indexOf(r)).toFixed(1)}" y="${height - 8}" font-size="10" text-anchor="middle" fill="#6b7385">${r.date.slice(5)}</text>`);
  svg.innerHTML = bars.join("") + line("notes_posted", "notes") + line("time_entries", "entries") + labels.join("") +
    `<text x="${pad}" y="16" font-size="10" fill="#6b7385">max ${top}/day</text>`;
  svg.dataset.days = String(rows.length);
}

async function loadPsa() {
  const card = document.getElementById("psa");
  const client = state.client;
  const result = await call(forClient(`psa-metrics?period=${state.period}&tz=${encodeURIComponent(state.zone)}`));
  if (result.status !== 200) {
    showClient("psa-client", "");
    return showError(card, result);
  }
  const data = result.body;
  drawFunnel(data.funnel);
  drawTrend(data.daily_trend);
  document.getElementById("trend-zone").textContent = `(${data.timezone})`;
  document.getElementById("time-entries").textContent =
    `${data.time_entries.count} time entries, ${data.time_entries.total_hours} h logged`;
  card.dataset.period = data.period;
  showClient("psa-client", client);
  card.dataset.state = "ok";
}

function showSavingsClient() {
  // The savings card has no client filter: the stopwatch baseline was not timed per client.
  const note = document.getElementById("savings-client");
  note.dataset.client = state.client;
  note.textContent = state.client
    ? `All clients, not only ${clientName(state.client)}: the stopwatch baseline was not timed per client.`
    : "";
}

async function refresh() {
  for (const id of ["escalations", "savings", "psa"]) document.getElementById(id).dataset.state = "loading";
  showSavingsClient();
  await Promise.all([loadEscalations(), loadEscalationTrend(), loadHandoffs(), loadByClient(), loadSavings(),
    loadPsa()]);
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

async function loadClients() {
  // The picker: "All clients" and the signed-in account's clients; a client of another account is
  // dropped (back to "All clients").
  const select = document.getElementById("client");
  const response = await fetch("/demo/clients", { headers: { Authorization: `Bearer ${state.user}` } });
  const clients = response.ok ? await response.json() : [];
  clientNames.clear();
  const all = document.createElement("option");
  all.value = "";
  all.textContent = "All clients";
  const options = [all];
  for (const client of clients) {
    clientNames.set(String(client.id), client.name);
    const option = document.createElement("option");
    option.value = String(client.id);
    option.textContent = client.name;
    options.push(option);
  }
  select.replaceChildren(...options);
  if (!clientNames.has(state.client)) state.client = "";
  select.value = state.client;
}

async function start() {
  const users = await (await fetch("/demo/users")).json();
  const select = document.getElementById("user");
  select.innerHTML = users.map((u) => `<option value="${u.token}">${u.token}</option>`).join("");
  const query = new URLSearchParams(location.search);
  const wanted = query.get("user");
  state.user = users.some((u) => u.token === wanted) ? wanted : "acme-admin";
  select.value = state.user;
  state.clock = Object.hasOwn(CLOCKS, query.get("clock") || "") ? query.get("clock") : "wall";
  state.client = query.get("client") || "";
  await loadClients();
  document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());
  const clockButtons = document.querySelectorAll("#clock-switch [data-clock]");
  const showSwitch = () => clockButtons.forEach((b) => {
    b.classList.toggle("active", b.dataset.clock === state.clock);
    b.setAttribute("aria-pressed", String(b.dataset.clock === state.clock));
  });
  showSwitch();
  for (const button of clockButtons) {
    button.addEventListener("click", () => {
      state.clock = button.dataset.clock;
      showSwitch();
      refresh();
    });
  }
  select.addEventListener("change", async () => {
    state.user = select.value;
    await loadClients();
    refresh();
  });
  const clientSelect = document.getElementById("client");
  clientSelect.addEventListener("change", () => { state.client = clientSelect.value; refresh(); });
  document.getElementById("zone").addEventListener("change", (e) => { state.zone = e.target.value; refresh(); });
  document.getElementById("refresh").addEventListener("click", refresh);
  for (const button of document.querySelectorAll("[data-interval]")) {
    button.addEventListener("click", () => {
      state.interval = button.dataset.interval;
      document.querySelectorAll("[data-interval]").forEach((b) => b.classList.toggle("active", b === button));
      refresh();
    });
  }
  for (const button of document.querySelectorAll("[data-period]")) {
    button.addEventListener("click", () => {
      state.period = button.dataset.period;
      document.querySelectorAll("[data-period]").forEach((b) => b.classList.toggle("active", b === button));
      refresh();
    });
  }
  await refresh();
}

start();
