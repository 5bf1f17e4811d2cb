// The console's pages. Each view(main, params) fills `main` and may return a cleanup function.

import { api, can, session, ApiError } from "./api.js";
import { h, status, time, age, table, kv, renderPayload } from "./render.js";

export function toast(text, bad = false) {
  const box = document.getElementById("toast");
  const item = h("div", { class: bad ? "bad" : "" }, text);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

const fail = (err) => toast(err instanceof ApiError ? `${err.message}${err.body && err.body.detail ? `: ${JSON.stringify(err.body.detail)}` : ""}` : String(err), true);

function go(hash) { location.hash = hash; }

/**
 * Ask before an action: a modal with what will happen, optional extra content (e.g. destination
 * choices) and Confirm / Cancel. Resolves true on Confirm, false on Cancel or Escape.
 */
export function confirmAction(title, text, { confirmLabel = "Confirm", danger = false, extra = null } = {}) {
  return new Promise((resolve) => {
    const done = (answer) => { overlay.remove(); document.removeEventListener("keydown", onKey); resolve(answer); };
    const onKey = (e) => { if (e.key === "Escape") done(false); };
    const ok = h("button", { type: "button", id: "confirm-ok", class: danger ? "danger" : "", onclick: () => done(true) }, confirmLabel);
    const overlay = h("div", { class: "overlay", id: "confirm" },
      h("div", { class: "dialog card", role: "dialog", "aria-modal": "true", "aria-labelledby": "confirm-title" },
        h("h2", { id: "confirm-title" }, title),
        h("p", { id: "confirm-text" }, text),
        extra,
        h("div", { class: "actions" }, ok,
          h("button", { type: "button", class: "secondary", id: "confirm-cancel", onclick: () => done(false) }, "Cancel"))));
    document.addEventListener("keydown", onKey);
    document.body.append(overlay);
    ok.focus();
  });
}

// -- login ------------------------------------------------------------------------------------------------------
export function login(main, { onLogin }) {
  const error = h("p", { class: "error", id: "login-error" });
  const token = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", placeholder: "bearer token" });
  const username = h("input", { id: "username", name: "username", autocomplete: "username" });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password" });
  const submit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      if (token.value.trim()) {
        session.token = token.value.trim();
        session.who = await api.get("/api/whoami");
      } else {
        const result = await api.post("/api/login", { username: username.value, password: password.value });
        session.token = result.token;
        session.who = { name: result.name, role: result.role, kind: result.kind };
      }
      onLogin();
    } catch (err) {
      session.token = null;
      error.textContent = err instanceof ApiError && err.status === 401 ? "This token or password is not valid." : String(err.message || err);
    }
  };
  main.replaceChildren(h("section", { class: "card login" },
    h("h1", {}, "Log in"),
    h("form", { onsubmit: submit },
      h("label", {}, "Token", token),
      h("p", { class: "muted" }, "or a local user:"),
      h("label", {}, "User", username),
      h("label", {}, "Password", password),
      h("button", { type: "submit", id: "login-button" }, "Log in"),
      error)));
  token.focus();
}

// -- dashboard --------------------------------------------------------------------------------------------------
// Rows that need someone come first and stand out (red: act now; amber: waits on a person); each says what to do.
export function dashboard(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(h("h1", {}, "Dashboard"), body);
  const refresh = async () => {
    try {
      const [flows, queues, stats, reviews] = await Promise.all([
        api.get("/api/endpoints"), api.get("/api/queues"), api.get("/api/stats", { hours: 24 }), api.get("/api/reviews", { state: "open", limit: 1000 }),
      ]);
      body.replaceChildren(
        actionSummary(queues, reviews.items),
        h("section", { class: "card" },
          h("h2", {}, "Queues"),
          table([
            { title: "Route → destination", cell: (q) => h("span", {}, `${q.route} → `, h("strong", {}, q.destination)) },
            { title: "State", class: "state", cell: (q) => [status(q.state), q.down_since ? h("div", { class: "muted" }, `since ${time(q.down_since)}`) : null] },
            { title: "Depth", cell: (q) => q.depth },
            { title: "Oldest", cell: (q) => age(q.oldest_age_secs) },
            { title: "In flight", cell: (q) => q.in_flight },
            { title: "Held", cell: (q) => q.held },
            { title: "Dead", cell: (q) => q.dead ? h("a", { href: `#/dead?destination=${encodeURIComponent(q.destination)}`, class: "dead-link" }, String(q.dead)) : "0" },
            { title: "Last error", class: "last-error", cell: (q) => q.last_error ? [h("div", {}, q.last_error), h("div", { class: "muted" }, time(q.last_error_at))] : (q.down_reason || "") },
            { title: "What to do", class: "advice", cell: (q) => q.advice },
            { title: "", cell: (q) => pauseButton(q, refresh) },
          ], queues, { empty: "No queues.", rowAttrs: (q) => ({ class: q.attention ? `attention-${q.attention}` : "", dataset: { queue: `${q.route}/${q.destination}`, state: q.state } }) })),
        statsCard(stats),
        h("section", { class: "card" },
          h("h2", {}, `Node ${flows.node}`),
          h("p", {}, `Undelivered: ${flows.undelivered}`),
          h("h3", {}, "Listeners"),
          table([
            { title: "Listener", cell: (l) => l.name },
            { title: "Type", cell: (l) => l.type },
            { title: "Received", cell: (l) => l.counters.received },
            { title: "Accepted", cell: (l) => l.counters.accepted },
            { title: "Duplicates", cell: (l) => l.counters.duplicates },
            { title: "Rejected", cell: (l) => l.counters.rejected },
            { title: "Refused (busy)", cell: (l) => l.counters.refused },
          ], flows.listeners)),
        h("section", { class: "card" },
          h("h2", {}, "Routes"),
          table([
            { title: "Route", cell: (r) => r.route },
            { title: "From", cell: (r) => r.from.join(", ") },
            { title: "Steps", cell: (r) => r.steps.join(" → ") || "—" },
            { title: "To", cell: (r) => r.destinations.map((d) => d.destination).join(", ") },
          ], flows.routes)));
    } catch (err) { fail(err); }
  };
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}

/** One line per kind of trouble, with a link to where it is dealt with; "All clear" when there is none. */
function actionSummary(queues, openReviews) {
  const items = [];
  const down = queues.filter((q) => q.state === "down");
  const failing = queues.filter((q) => q.state === "failing");
  const dead = queues.reduce((n, q) => n + q.dead, 0);
  const paused = queues.filter((q) => q.paused);
  if (down.length) items.push(h("li", { class: "alert" }, `Down: ${down.map((q) => q.destination).join(", ")} (unreachable; deliveries wait).`));
  if (failing.length) items.push(h("li", { class: "alert" }, `Failing: ${failing.map((q) => `${q.destination}: ${q.last_error || "retrying"}`).join("; ")}.`));
  if (dead) items.push(h("li", { class: "alert" }, h("a", { href: "#/dead" }, `${dead} dead letter${dead > 1 ? "s" : ""}`), ": fix the cause, then requeue or discard."));
  if (openReviews.length) items.push(h("li", { class: "warn" }, h("a", { href: "#/reviews" }, `${openReviews.length} identity review${openReviews.length > 1 ? "s" : ""}`), " waiting for a decision."));
  if (paused.length) items.push(h("li", { class: "warn" }, `Paused: ${paused.map((q) => `${q.route} → ${q.destination}`).join(", ")}.`));
  const level = items.some((li) => li.className === "alert") ? "alert" : (items.length ? "warn" : "clear");
  return h("section", { class: `card summary ${level}`, id: "needs-action" },
    h("h2", {}, items.length ? "Needs action" : "All clear"),
    items.length ? h("ul", {}, items) : h("p", { class: "muted" }, "Nothing is down, failing, dead-lettered, paused or waiting for review."));
}

const SERIES = [["received", "Received"], ["delivered", "Delivered"], ["failed", "Failed attempts"], ["dead", "Dead"], ["rejected", "Rejected"]];

/** The last 24 hours as small bar charts (one per counter), then totals per route and destination. */
function statsCard(stats) {
  const charts = SERIES.map(([key, title]) => h("figure", { class: `chart ${key}`, dataset: { series: key } },
    barChart(stats.series[key], stats.hours),
    h("figcaption", {}, `${title}: `, h("strong", { class: "total" }, String(stats.totals[key])))));
  return h("section", { class: "card", id: "stats" },
    h("h2", {}, "Last 24 hours"),
    h("p", { class: "muted" }, "Hourly totals, kept in the store: they survive restarts and add up every node's."),
    h("div", { class: "charts" }, charts),
    table([
      { title: "Route → destination", cell: (q) => q.route ? `${q.route} → ${q.destination}` : `listener ${q.destination}` },
      { title: "Received", cell: (q) => q.received },
      { title: "Delivered", cell: (q) => q.delivered },
      { title: "Failed attempts", cell: (q) => q.failed },
      { title: "Dead", cell: (q) => q.dead },
      { title: "Rejected", cell: (q) => q.rejected },
    ], stats.queues, { empty: "Nothing counted in the last 24 hours." }));
}

function barChart(values, hours) {
  const NS = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, ...kids) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    for (const kid of kids) node.append(kid);
    return node;
  };
  const width = 240, height = 48, max = Math.max(1, ...values), bar = width / values.length;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  values.forEach((v, i) => {
    const hgt = v ? Math.max(1, (v / max) * (height - 2)) : 0;
    const title = el("title", {});
    title.textContent = `${new Date(hours[i]).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })}: ${v}`;
    svg.append(el("rect", { x: i * bar + 0.5, y: height - hgt, width: Math.max(1, bar - 1), height: hgt, class: "bar" }, title));
  });
  return svg;
}

function pauseButton(q, refresh) {
  if (!can("operator") || q.paused === null) return q.paused ? status("paused") : "";
  const action = q.paused ? "resume" : "pause";
  return h("button", {
    class: q.paused ? "" : "secondary", type: "button", dataset: { action, destination: q.destination },
    onclick: async () => {
      try {
        await api.post(`/api/destinations/${encodeURIComponent(q.destination)}/${action}`, { route: q.route });
        toast(`${q.destination}: ${action}d`);
        refresh();
      } catch (err) { fail(err); }
    },
  }, q.paused ? "Resume" : "Pause");
}

// -- messages ---------------------------------------------------------------------------------------------------
const FILTERS = [
  ["ins", "INS"], ["ipp", "IPP"], ["patient_key", "Patient key (IPP@authority)"], ["control_id", "MSH-10 control id"],
  ["document_id", "Document uniqueId"], ["message_type", "Type (ADT^A01)"], ["sending_app", "Sending application"],
];
const STATUSES = ["", "pending", "awaiting_identity", "identity_review", "delivered", "failed", "rejected", "unrouted"];

export function messages(main, { params }) {
  const inputs = {};
  const form = h("form", { class: "search", id: "search-form", onsubmit: (e) => {
    e.preventDefault();
    const query = new URLSearchParams();
    for (const [k, el] of Object.entries(inputs)) {
      let v = el.value.trim();
      if (v && el.type === "datetime-local") v = new Date(v).toISOString();
      if (v) query.set(k, v);
    }
    go(`#/messages?${query}`);
  } });
  for (const [name, title] of FILTERS) {
    inputs[name] = h("input", { name, id: `f-${name}`, value: params.get(name) || "" });
    form.append(h("label", {}, title, inputs[name]));
  }
  inputs.status = h("select", { name: "status", id: "f-status" }, STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s || "any")));
  form.append(h("label", {}, "Status", inputs.status));
  for (const [name, title] of [["since", "Received since"], ["until", "Received before"]]) {
    const value = params.get(name) ? toLocalInput(params.get(name)) : "";
    inputs[name] = h("input", { name, id: `f-${name}`, type: "datetime-local", value });
    form.append(h("label", {}, title, inputs[name]));
  }
  form.append(h("button", { type: "submit", id: "search-button" }, "Search"));
  const results = h("div", { id: "results" });
  main.replaceChildren(h("h1", {}, "Messages"), h("section", { class: "card" }, form), results);

  const load = async (before) => {
    const query = Object.fromEntries(params.entries());
    if (before) query.before = before;
    try {
      const page = await api.get("/api/messages", query);
      const rows = table([
        { title: "Received", cell: (m) => time(m.received_at) },
        { title: "Status", class: "status-cell", cell: (m) => derivedStatus(m) },
        { title: "Type", cell: (m) => m.message_type },
        { title: "Control id", class: "mono", cell: (m) => m.control_id },
        { title: "Patient", class: "mono", cell: (m) => m.patient_key },
        { title: "Deliveries", cell: (m) => m.deliveries.map((d) => `${d.destination}: ${d.status}`).join(", ") },
        { title: "Id", class: "mono muted", cell: (m) => m.id },
      ], page.items, { onclick: (m) => go(`#/messages/${m.id}`), empty: "No message matches." });
      const more = page.next_before ? h("div", { class: "actions" }, h("button", { class: "secondary", type: "button", id: "older", onclick: () => load(page.next_before) }, "Older →")) : null;
      results.replaceChildren(h("section", { class: "card" }, rows, more));
    } catch (err) { fail(err); }
  };
  load();
}

// -- content search ---------------------------------------------------------------------------------------------
/**
 * Search the stored payloads (operators): a text, or an HL7 v2 field condition such as PID-5.1=DUPONT, over a
 * required time window (24 h by default, 31 days at most). The API records each search in the audit trail,
 * without the text; the text stays out of the address bar (and so out of the browser's history).
 */
export function contentSearch(main) {
  if (!can("operator")) {
    main.replaceChildren(h("h1", {}, "Content search"),
      h("p", { class: "muted", id: "content-denied" }, "Searching payloads reads health data: it needs the operator role."));
    return;
  }
  const now = new Date();
  const text = h("input", { name: "text", id: "c-text", required: true, minlength: 3, maxlength: 200, autocomplete: "off",
    placeholder: "DUPONT, or PID-5.1=DUPONT" });
  const since = h("input", { name: "since", id: "c-since", type: "datetime-local", required: true,
    value: toLocalInput(new Date(now - 24 * 3600 * 1000).toISOString()) });
  const until = h("input", { name: "until", id: "c-until", type: "datetime-local", required: true,
    value: toLocalInput(new Date(now.getTime() + 60 * 1000).toISOString()) });
  const limit = h("input", { name: "limit", id: "c-limit", type: "number", min: 1, max: 200, value: 50 });
  const results = h("div", { id: "content-results" });
  const form = h("form", { class: "search", id: "content-form", onsubmit: async (e) => {
    e.preventDefault();
    const query = { text: text.value.trim(), since: new Date(since.value).toISOString(),
      until: new Date(until.value).toISOString(), limit: limit.value };
    results.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    try {
      const page = await api.get("/api/search/content", query);
      results.replaceChildren(contentResults(page));
    } catch (err) { results.replaceChildren(); fail(err); }
  } },
  h("label", {}, "Text or field (PID-5.1=…)", text),
  h("label", {}, "Received since", since),
  h("label", {}, "Received before", until),
  h("label", {}, "At most", limit),
  h("button", { type: "submit", id: "content-button" }, "Search"));
  main.replaceChildren(h("h1", {}, "Content search"),
    h("section", { class: "card" }, form,
      h("p", { class: "muted" }, "Each search is recorded in the audit trail with your name and the window (never the text).")),
    results);
  text.focus();
}

function contentResults(page) {
  const notes = [];
  if (page.index_pending) {
    notes.push(h("p", { class: "warn", id: "content-lag" },
      `${page.index_pending} message(s) received since ${time(page.index_pending_since)} are not indexed yet: `
      + "they may be missing from these results. Search again in a moment."));
  }
  if (page.truncated) {
    notes.push(h("p", { class: "warn", id: "content-truncated" }, "More messages match than shown: narrow the window or the text."));
  }
  return h("section", { class: "card" }, notes,
    h("p", { class: "muted" }, `${page.items.length} message(s) received between ${time(page.since)} and ${time(page.until)}, newest first.`),
    table([
      { title: "Received", cell: (m) => time(m.received_at) },
      { title: "Status", class: "status-cell", cell: (m) => derivedStatus(m) },
      { title: "Type", cell: (m) => m.message_type },
      { title: "Control id", class: "mono", cell: (m) => m.control_id },
      { title: "Patient", class: "mono", cell: (m) => m.patient_key },
      { title: "Trace", class: "mono", cell: (m) => h("a", { href: `#/messages/${m.id}`, class: "trace-link" }, m.id) },
    ], page.items, { onclick: (m) => go(`#/messages/${m.id}`), empty: "No message of this window contains it." }));
}

/** A message with no delivery of its own (an MSSanté mail) shows what became of what was derived from it. */
function derivedStatus(m) {
  if (!m.derived || !m.derived.length) return status(m.status);
  const n = m.derived.length;
  return h("span", { title: `${m.status}: went on as ${n} derived message(s)` }, status(m.effective_status),
    h("span", { class: "muted" }, ` via ${n} ${n === 1 ? "document" : "documents"}`));
}

function toLocalInput(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// -- one message's trace ----------------------------------------------------------------------------------------
export async function trace(main, { id }) {
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  let t;
  try { t = await api.get(`/api/messages/${encodeURIComponent(id)}`); } catch (err) { fail(err); main.replaceChildren(h("p", { class: "error" }, "Not found.")); return; }
  const m = t.message;
  const payloadBox = h("div", { id: "payload" });
  const actions = h("div", { class: "actions" });
  if (can("operator")) {
    actions.append(
      h("button", { type: "button", id: "show-payload", onclick: () => showPayload(m.id, payloadBox) }, "Show payload"),
      h("button", { type: "button", id: "replay", onclick: () => replay(m.id, t.deliveries) }, "Replay…"),
      h("button", { type: "button", class: "secondary", id: "replay-edit", onclick: () => editAndReplay(m.id, t.deliveries, payloadBox) }, "Replay with changes…"));
  } else {
    actions.append(h("p", { class: "muted" }, "Your role sees metadata only (no payload, no actions)."));
  }
  main.replaceChildren(...[
    h("h1", {}, "Message ", h("span", { class: "mono" }, m.id)),
    h("section", { class: "card", id: "summary" },
      kv({ status: m.status, reason: m.reason || "—", type: m.message_type, "control id (MSH-10)": m.control_id,
        sender: `${m.sending_app} / ${m.sending_facility}`, patient: m.patient_key || "—", endpoint: m.endpoint,
        received: time(m.received_at), "content type": m.content_type, size: `${m.size} bytes`,
        correlation: m.correlation_id, parent: m.parent_id || "—" }),
      actions),
    h("section", { class: "card" }, h("h2", {}, "Inbound metadata"), kv(t.metadata)),
    h("section", { class: "card", id: "deliveries" }, h("h2", {}, "Deliveries"),
      t.deliveries.length ? t.deliveries.map((d) => delivery(m.id, d))
        : m.derived.length ? [h("p", { id: "derived-note" }, `No delivery of its own: it went on as ${m.derived.length} derived message(s), `, status(m.effective_status), "."),
            table([
              { title: "Status", cell: (c) => status(c.status) },
              { title: "Type", cell: (c) => c.message_type },
              { title: "Id", class: "mono", cell: (c) => h("a", { href: `#/messages/${c.id}` }, c.id) },
            ], m.derived)]
        : h("p", { class: "muted" }, m.status === "rejected" ? "No delivery: refused (see the reason above)." : "No delivery: no route takes it.")),
    t.reviews.length ? h("section", { class: "card" }, h("h2", {}, "Identity reviews"), reviewTable(t.reviews, () => trace(main, { id }))) : null,
    t.related.length ? h("section", { class: "card", id: "related" }, h("h2", {}, "Related messages (same correlation id)"),
      table([
        { title: "Received", cell: (r) => time(r.received_at) },
        { title: "Status", cell: (r) => status(r.status) },
        { title: "Id", class: "mono", cell: (r) => r.id },
        { title: "Parent", class: "mono muted", cell: (r) => r.parent_id || "" },
      ], t.related, { onclick: (r) => go(`#/messages/${r.id}`) })) : null,
    h("section", { class: "card" }, h("h2", {}, "Payload"), payloadBox),
  ].filter(Boolean));
}

function delivery(messageId, d) {
  const output = h("div", { class: "output" });
  const showOutput = async () => {
    try {
      const out = await api.get(`/api/messages/${encodeURIComponent(messageId)}/deliveries/${d.id}/output`);
      output.replaceChildren(
        h("p", { class: "muted" }, `After ${out.steps.join(" → ") || "no step"}: ${out.content_type}, ${out.size} bytes (recomputed now; recorded in the audit trail).`),
        Object.keys(out.metadata_added).length ? kv(out.metadata_added) : null,
        renderPayload(out));
    } catch (err) { fail(err); }
  };
  const showSent = async () => {
    try {
      const sent = await api.get(`/api/messages/${encodeURIComponent(messageId)}/deliveries/${d.id}/sent`);
      // What was sent beside what the peer answered to each attempt (the ACK, the HTTP body, the SMTP lines).
      const replies = sent.replies.length ? sent.replies.map((r) => h("div", { class: "reply", dataset: { attempt: r.number } },
        h("h4", {}, `Attempt ${r.number}: `, status(r.outcome), ` ${r.kind} ${r.summary}`),
        h("p", { class: "muted" }, `${r.content_type || "no content type"}, ${r.size} bytes${r.truncated ? " (cut: only the first part was kept)" : ""}, at ${time(r.received_at)}`),
        r.text ? renderPayload(r) : null))
        : h("p", { class: "muted" }, "The peer has not answered any attempt.");
      output.replaceChildren(
        h("p", { class: "muted" }, `Sent: ${sent.content_type}, ${sent.size} bytes${sent.changed ? "" : " (the inbound body, unchanged)"}, made by the steps at ${time(sent.computed_at)} and resent as is by every retry (recorded in the audit trail).`),
        Object.keys(sent.metadata_added).length ? kv(sent.metadata_added) : null,
        h("div", { class: "side-by-side" },
          h("div", { class: "sent-body" }, h("h4", {}, "Sent"), renderPayload(sent)),
          h("div", { class: "replies" }, h("h4", {}, "Replies"), replies)));
    } catch (err) { fail(err); }
  };
  return h("div", { class: "delivery", dataset: { destination: d.destination } },
    h("h3", {}, `${d.route} → ${d.destination} `, status(d.status), h("span", { class: "muted" }, ` ${d.attempts}/${d.max_attempts} attempts`)),
    d.waiting_reason ? h("p", { class: "waiting-reason" }, `Why it waits: ${d.waiting_reason}`) : null,
    d.last_error ? h("p", { class: "error" }, d.last_error) : null,
    table([
      { title: "#", cell: (a) => a.number },
      { title: "Started", cell: (a) => time(a.started_at) },
      { title: "Took", cell: (a) => `${a.duration_ms.toFixed(1)} ms` },
      { title: "Outcome", cell: (a) => status(a.outcome) },
      { title: "Acknowledgement", cell: (a) => a.acknowledgement },
      { title: "Reply", cell: (a) => a.reply ? `${a.reply.kind} ${a.reply.summary} (${a.reply.size} bytes${a.reply.truncated ? ", cut" : ""})` : "—" },
    ], d.attempts_log, { empty: "Not attempted yet." }),
    Object.keys(d.output_metadata).length ? [h("p", { class: "muted" }, "What the steps added:"), kv(d.output_metadata)] : null,
    can("operator") ? h("div", { class: "actions" },
      d.sent || d.attempts_log.some((a) => a.reply) ? h("button", { type: "button", class: "secondary", dataset: { sent: d.id }, onclick: showSent }, "Show what was sent and the replies") : null,
      h("button", { type: "button", class: "secondary", dataset: { output: d.id }, onclick: showOutput }, "Show what the steps make of it")) : null,
    output);
}

async function showPayload(id, box) {
  try {
    const payload = await api.get(`/api/messages/${encodeURIComponent(id)}/payload`);
    box.replaceChildren(h("p", { class: "muted" }, `${payload.content_type}, ${payload.size} bytes (${payload.encoding}); this view is recorded in the audit trail.`), renderPayload(payload));
    return payload;
  } catch (err) { fail(err); return null; }
}

/**
 * Which destinations a replay goes to: the message's destinations as checkboxes, those already
 * delivered unticked (so that a system that has it does not get it twice). No delivery (refused or
 * unrouted): routed afresh. Returns {box, chosen()}; chosen() is null for "every destination".
 */
function destinationPicker(deliveries) {
  const byDest = new Map();
  for (const d of deliveries) {
    const seen = byDest.get(d.destination);
    if (!seen || seen.status !== "delivered") byDest.set(d.destination, d);
  }
  if (!byDest.size) {
    return { box: h("p", { class: "muted" }, "It has no delivery yet: it is routed afresh, to every destination its routes give."), chosen: () => null };
  }
  const boxes = [...byDest.values()].map((d) => h("input", { type: "checkbox", name: "replay-destination", value: d.destination, checked: d.status !== "delivered" }));
  const box = h("fieldset", { class: "destinations", id: "replay-destinations" }, h("legend", {}, "Send to"),
    boxes.map((cb, i) => {
      const d = [...byDest.values()][i];
      return h("label", { class: "check" }, cb, ` ${d.destination} `, status(d.status), d.status === "delivered" ? h("span", { class: "muted" }, " (already has it)") : null);
    }));
  return { box, chosen: () => boxes.filter((cb) => cb.checked).map((cb) => cb.value) };
}

async function replay(id, deliveries, body) {
  const picker = destinationPicker(deliveries);
  const corrected = body === undefined ? "" : " with your corrections";
  const yes = await confirmAction("Replay this message?", `A new message is made from this one${corrected} and sent again.`,
    { confirmLabel: "Replay", extra: picker.box });
  if (!yes) return;
  const destinations = picker.chosen();
  if (destinations !== null && !destinations.length) { toast("Choose at least one destination: nothing was replayed.", true); return; }
  const request = {};
  if (body !== undefined) request.body = body;
  if (destinations !== null) request.destinations = destinations;
  try {
    const result = await api.post(`/api/messages/${encodeURIComponent(id)}/replay`, request);
    const link = h("a", { href: `#/messages/${result.new_id}`, id: "replayed-link" }, result.new_id);
    const box = document.getElementById("summary");
    box.append(h("p", { id: "replay-result" }, `Replayed as `, link, ` (${result.deliveries} deliveries).`));
    toast(`Replayed as ${result.new_id}`);
  } catch (err) { fail(err); }
}

async function editAndReplay(id, deliveries, box) {
  const payload = await showPayload(id, box);
  if (!payload || payload.encoding === "base64") return;
  const area = h("textarea", { id: "replay-body" }, payload.text.replace(/\r/g, "\n"));
  box.append(h("h3", {}, "Corrected message"), area,
    h("div", { class: "actions" }, h("button", { type: "button", id: "replay-corrected", onclick: () => replay(id, deliveries, area.value) }, "Replay corrected…")));
}

// -- dead letters -----------------------------------------------------------------------------------------------
export function dead(main, { params }) {
  const list = h("div", {});
  const destination = h("input", { id: "dead-destination", value: params.get("destination") || "" });
  main.replaceChildren(h("h1", {}, "Dead letters"),
    h("section", { class: "card" }, h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); go(`#/dead?destination=${encodeURIComponent(destination.value)}`); } },
      h("label", {}, "Destination", destination), h("button", { type: "submit" }, "Filter"))),
    list);
  const load = async () => {
    try {
      const page = await api.get("/api/dead", { destination: params.get("destination") || "", limit: 500 });
      const picked = new Set();
      // Both show the count first (a dry run) and ask before acting.
      const act = async (action, body) => {
        const texts = {
          requeue: ["Requeue", "They are sent again to their destination, attempts reset. Check that the cause (the last error) is fixed first."],
          discard: ["Discard", "They are given up for good: never sent. The patient's later messages to that destination go on."],
        };
        try {
          const counted = await api.post(`/api/dead/${action}`, { ...body, dry_run: true });
          if (!counted.matched) { toast(`Nothing to ${action}: tick dead letters first.`, true); return; }
          const many = `${counted.matched}${counted.more ? "+" : ""}`;
          const [verb, text] = texts[action];
          const yes = await confirmAction(`${verb} ${many} dead ${counted.matched === 1 ? "delivery" : "deliveries"}?`, text,
            { confirmLabel: `${verb} ${many}`, danger: action === "discard" });
          if (!yes) return;
          const r = await api.post(`/api/dead/${action}`, body);
          toast(`${r.requeued} ${action === "requeue" ? "requeued" : "discarded"}${r.more ? " (more remain)" : ""}`);
          load();
        } catch (err) { fail(err); }
      };
      const only = params.get("destination") || null;
      const buttons = can("operator") ? h("div", { class: "actions" },
        h("button", { type: "button", id: "requeue-selected", onclick: () => act("requeue", { delivery_ids: [...picked] }) }, "Requeue selected"),
        h("button", { type: "button", class: "secondary", id: "requeue-all", onclick: () => act("requeue", { all_dead: true, destination: only }) }, "Requeue all"),
        h("button", { type: "button", class: "danger", id: "discard-selected", onclick: () => act("discard", { delivery_ids: [...picked] }) }, "Discard selected…")) : null;
      list.replaceChildren(h("section", { class: "card" }, buttons, table([
        { title: "", cell: (d) => can("operator") ? h("input", { type: "checkbox", onclick: (e) => { e.stopPropagation(); if (e.target.checked) picked.add(d.delivery_id); else picked.delete(d.delivery_id); } }) : "" },
        { title: "Delivery", cell: (d) => d.delivery_id },
        { title: "When", cell: (d) => time(d.updated_at) },
        { title: "Route → destination", cell: (d) => `${d.route} → ${d.destination}` },
        { title: "Attempts", cell: (d) => d.attempts },
        { title: "Last error", cell: (d) => d.last_error },
        { title: "Message", class: "mono", cell: (d) => h("a", { href: `#/messages/${d.message_id}` }, d.message_id) },
      ], page.items, { empty: "No dead letter." })));
    } catch (err) { fail(err); }
  };
  load();
}

// -- identity review --------------------------------------------------------------------------------------------
// One row per message (a message routed to two destinations opens one review per waiting delivery); the decision
// applies to every destination waiting on it. "Compare" shows the registry's value beside the message's.
function groupReviews(items) {
  const groups = new Map();
  for (const r of items) {
    const key = `${r.message_id}|${r.state}`;
    if (!groups.has(key)) groups.set(key, { ...r, reviews: [] });
    groups.get(key).reviews.push(r);
  }
  return [...groups.values()];
}

function reviewTable(items, reload) {
  const detail = h("div", { id: "review-detail" });
  const rows = groupReviews(items);
  const tbl = table([
    { title: "Review", cell: (g) => g.reviews.map((r) => r.review_id).join(", ") },
    { title: "Opened", cell: (g) => time(g.created_at) },
    { title: "State", cell: (g) => status(g.state) },
    { title: "Patient", class: "mono", cell: (g) => g.patient_key },
    { title: "Reason", cell: (g) => g.reason },
    { title: "Waiting", class: "waiting", cell: (g) => g.reviews.map((r) => r.destination || `delivery ${r.delivery_id}`).join(", ") },
    { title: "Message", class: "mono", cell: (g) => h("a", { href: `#/messages/${g.message_id}` }, g.message_id) },
    { title: "", cell: (g) => h("span", { class: "actions" },
      h("button", { type: "button", class: "secondary", dataset: { review: g.review_id, action: "compare" }, onclick: () => compareTraits(g, detail) }, "Compare"),
      (g.state === "open" && can("operator")) ? [
        h("button", { type: "button", dataset: { review: g.review_id, action: "release" }, onclick: () => resolve(g, "release", reload) }, "Release…"),
        h("button", { type: "button", class: "danger", dataset: { review: g.review_id, action: "discard" }, onclick: () => resolve(g, "discard", reload) }, "Discard…")]
        : (g.resolved_by ? `by ${g.resolved_by}` : "")) },
  ], rows, { empty: "No review waiting.", rowAttrs: (g) => ({ dataset: { message: g.message_id } }) });
  return h("div", {}, tbl, detail);
}

async function compareTraits(group, box) {
  try {
    const d = await api.get(`/api/reviews/${group.review_id}`);
    box.replaceChildren(h("section", { class: "card", id: "trait-comparison" },
      h("h3", {}, `Review ${d.review.review_id}: ${d.review.patient_key}`),
      h("p", { class: "muted" }, `Registry: ${d.identity_status || "unknown identity"}${d.ins_known ? ", INS known" : ", no INS"}.`,
        d.masked ? " Values are masked for your role." : " Showing the patient's traits is recorded in the audit trail."),
      table([
        { title: "Trait", cell: (t) => t.label },
        { title: "Registry", class: "mono", cell: (t) => t.registry || "—" },
        { title: "Message", class: "mono", cell: (t) => t.message || "—" },
        { title: "", cell: (t) => t.differs ? status("differs") : "" },
      ], d.traits, { empty: "No trait could be read.", rowAttrs: (t) => ({ class: t.differs ? "attention-alert" : "", dataset: { trait: t.trait } }) }),
      h("p", {}, `Waiting on this decision: ${d.waiting.map((w) => `${w.route} → ${w.destination}`).join(", ") || "nothing (resolved)"}.`)));
  } catch (err) { fail(err); }
}

async function resolve(group, action, reload) {
  const open = group.reviews.filter((r) => r.state === "open");
  const where = open.map((r) => r.destination || `delivery ${r.delivery_id}`).join(", ");
  const what = action === "release"
    ? `The message is sent on to ${where}, the trait check waived for it. Release only if the registry's identity is this patient's.`
    : `The waiting deliver${open.length > 1 ? "ies" : "y"} to ${where} ${open.length > 1 ? "are" : "is"} dead-lettered: not sent.`;
  const yes = await confirmAction(`${action === "release" ? "Release" : "Discard"} review ${open.map((r) => r.review_id).join(", ")}?`, what,
    { confirmLabel: action === "release" ? "Release" : "Discard", danger: action === "discard" });
  if (!yes) return;
  try {
    for (const r of open) await api.post(`/api/reviews/${r.review_id}/resolve`, { action });
    toast(`Review ${open.map((r) => r.review_id).join(", ")}: ${action}d`);
    reload();
  } catch (err) { fail(err); }
}

export function reviews(main, { params }) {
  const state = params.get("state") || "open";
  const box = h("div", {});
  const picker = h("select", { id: "review-state", onchange: (e) => go(`#/reviews?state=${e.target.value}`) },
    ["open", "released", "discarded"].map((s) => h("option", { value: s, selected: s === state }, s)));
  main.replaceChildren(h("h1", {}, "Identity review"),
    h("p", { class: "muted" }, "Messages whose patient traits disagree with the identity registry. Release sends the message on (the trait check waived for it); discard dead-letters it."),
    h("label", {}, "State", picker), box);
  const load = async () => {
    try {
      const page = await api.get("/api/reviews", { state });
      box.replaceChildren(h("section", { class: "card" }, reviewTable(page.items, load)));
    } catch (err) { fail(err); }
  };
  load();
}

// -- audit trail ------------------------------------------------------------------------------------------------
export function audit(main) {
  const result = h("p", { id: "verify-result" });
  const list = h("div", {});
  main.replaceChildren(h("h1", {}, "Audit trail"),
    h("div", { class: "actions" }, h("button", { type: "button", id: "verify", onclick: async () => {
      try {
        const r = await api.get("/api/audit/verify");
        result.replaceChildren(r.ok ? status("ok") : status("denied"), ` ${r.checked} entries checked` + (r.ok ? `; head #${r.head_id}` : `; entry ${r.first_bad_id}: ${r.problem}`));
      } catch (err) { fail(err); }
    } }, "Verify the hash chain")), result, list);
  const load = async (before) => {
    try {
      const page = await api.get("/api/audit", { before, limit: 100 });
      list.replaceChildren(h("section", { class: "card" }, table([
        { title: "#", cell: (e) => e.id },
        { title: "When", cell: (e) => time(e.at) },
        { title: "Who", cell: (e) => `${e.actor} (${e.role})` },
        { title: "Action", cell: (e) => e.action },
        { title: "Outcome", cell: (e) => status(e.outcome) },
        { title: "Message", class: "mono", cell: (e) => e.message_id ? h("a", { href: `#/messages/${e.message_id}` }, e.message_id) : e.target },
        { title: "Detail", class: "mono", cell: (e) => JSON.stringify(e.detail) },
      ], page.items, { empty: "Empty." }),
      page.next_before ? h("button", { type: "button", class: "secondary", onclick: () => load(page.next_before) }, "Older →") : null));
    } catch (err) { fail(err); }
  };
  load();
}
