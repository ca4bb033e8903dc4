// <flowpilot-queue-stat period="7d">: the median time to first action after a claim, with its
// sample size, for a host's queue page. One script tag loads it; it calls the escalations route on
// the same origin with the browser's cookies, draws in its own shadow DOM with a constructable
// stylesheet (nothing a Content-Security-Policy without 'unsafe-inline' would block), and says in
// words when the reader may not see it.
"use strict";

(() => {
  const script = document.currentScript;
  // The API is where this file was served from: <api>/static/stat-card.js (an `api` attribute wins).
  const SERVED_FROM = script && script.src ? script.src.replace(/\/static\/stat-card\.js(\?.*)?$/, "") : "";
  const PERIODS = { "7d": "last 7 days", "30d": "last 30 days", "90d": "last 90 days" };
  const NOT_RECOVERED = "This is NOT 'minutes recovered' and not a time saving.";
  const STYLE = `
    :host { display: inline-block; font: 14px/1.4 system-ui, sans-serif; color: #1d2433; }
    .card { border: 1px solid #dde2ec; border-radius: 8px; padding: 10px 14px; background: #fff;
      min-width: 220px; max-width: 320px; }
    .label { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #5f6779; }
    .value { font-size: 24px; font-weight: 600; }
    .n, .note, .message { font-size: 12px; color: #5f6779; }
    .note { margin-top: 4px; }
    :host([data-state="forbidden"]) .message, :host([data-state="unauthenticated"]) .message,
    :host([data-state="error"]) .message, :host([data-state="rate_limited"]) .message { color: #c2353a; }
    [hidden] { display: none; }`;

  function formatSeconds(value) {
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

  class QueueStat extends HTMLElement {
    static get observedAttributes() { return ["period", "api"]; }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const styles = new CSSStyleSheet();  // constructed, not inline: a strict CSP allows it
      styles.replaceSync(STYLE);
      root.adoptedStyleSheets = [styles];
      const card = document.createElement("div");
      card.className = "card";
      card.setAttribute("part", "card");
      const make = (cls, tag = "div") => {
        const element = document.createElement(tag);
        element.className = cls;
        card.appendChild(element);
        return element;
      };
      this.labelElement = make("label");
      this.valueElement = make("value");
      this.nElement = make("n");
      this.noteElement = make("note");
      this.messageElement = make("message");
      root.appendChild(card);
    }

    connectedCallback() { this.load(); }

    attributeChangedCallback() { if (this.isConnected) this.load(); }

    get period() {
      const wanted = this.getAttribute("period") || "7d";
      return Object.hasOwn(PERIODS, wanted) ? wanted : "7d";
    }

    show(state, message) {
      this.dataset.state = state;
      this.messageElement.textContent = message || "";
      this.messageElement.hidden = !message;
      for (const element of [this.valueElement, this.nElement, this.noteElement]) element.hidden = state !== "ok";
    }

    async load() {
      const period = this.period;
      const api = this.getAttribute("api") || SERVED_FROM;
      this.labelElement.textContent = `Median time to first action after a claim, ${PERIODS[period]}`;
      this.show("loading", "Loading…");
      let response;
      try {
        response = await fetch(`${api}/escalations?period=${period}`,
          { credentials: "same-origin", cache: "no-cache", headers: { Accept: "application/json" } });
      } catch (error) {
        this.show("error", "Analytics could not be reached.");
        return;
      }
      if (period !== this.period) return;  // the attribute changed meanwhile: a newer load follows
      const body = await response.json().catch(() => ({}));
      if (response.status === 401) return this.show("unauthenticated", "Sign in to see this figure.");
      if (response.status === 403) return this.show("forbidden", "Your role cannot see this figure.");
      if (response.status === 429) return this.show("rate_limited", "Too many requests; try again shortly.");
      if (response.status !== 200) return this.show("error", "Analytics could not answer; try again shortly.");
      this.valueElement.textContent = formatSeconds(body.median_seconds);
      this.valueElement.dataset.raw = body.median_seconds === null ? "" : String(body.median_seconds);
      const n = body.n_handoffs_with_action;
      this.nElement.textContent = `n = ${n} claimed handoff${n === 1 ? "" : "s"} with an action` +
        ` (of ${body.n_handoffs_claimed} claimed)`;
      this.nElement.dataset.raw = String(n);
      const definition = body.metric_definition || "";
      const at = definition.indexOf("This is NOT");
      this.noteElement.textContent = at >= 0 ? definition.slice(at).trim() : NOT_RECOVERED;
      this.show("ok", "");
    }
  }

  if (!customElements.get("flowpilot-queue-stat")) customElements.define("flowpilot-queue-stat", QueueStat);
})();
