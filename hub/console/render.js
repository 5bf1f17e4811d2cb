// DOM helpers and payload renderers. Everything is built with textContent: no HTML from data, ever.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const status = (value) => h("span", { class: `status ${value}` }, value);

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, { hour12: false });
}

export function age(secs) {
  if (secs === null || secs === undefined) return "";
  if (secs < 60) return `${secs.toFixed(0)} s`;
  if (secs < 3600) return `${(secs / 60).toFixed(0)} min`;
  if (secs < 86400) return `${(secs / 3600).toFixed(1)} h`;
  return `${(secs / 86400).toFixed(1)} d`;
}

export function table(columns, rows, { onclick, empty = "Nothing here.", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.title)))),
    h("tbody", {}, rows.map((row) => {
      const extra = rowAttrs ? rowAttrs(row) : {};
      return h("tr", {
        ...extra,
        class: [onclick ? "clickable" : "", extra.class || ""].join(" ").trim() || undefined,
        onclick: onclick ? () => onclick(row) : undefined,
      }, columns.map((c) => h("td", { class: c.class }, c.cell(row))));
    })));
}

export function kv(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return h("dl", { class: "kv" }, entries.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, String(v))]));
}

// -- payloads ---------------------------------------------------------------------------------------------------

/** HL7 v2 ER7, segment by segment; hovering a field shows its position (PID-3). */
export function renderHl7(text) {
  const segments = text.split(/\r\n|\r|\n/).filter((s) => s.length);
  const fieldSep = segments.length && segments[0].startsWith("MSH") ? segments[0][3] : "|";
  return h("table", { class: "hl7" }, h("tbody", {}, segments.map((segment) => {
    const parts = segment.split(fieldSep);
    const id = parts[0];
    const cells = [];
    parts.slice(1).forEach((value, i) => {
      // MSH-1 is the field separator itself, so MSH-2 is the first value after it.
      const number = id === "MSH" ? i + 2 : i + 1;
      if (i) cells.push(h("span", { class: "sep" }, fieldSep));
      cells.push(h("span", { class: "field", title: `${id}-${number}` }, value));
    });
    return h("tr", { class: "seg", dataset: { segment: id } }, h("td", { class: "seg-id" }, id), h("td", {}, cells));
  })));
}

/** XML (CDA) indented, with tags, attributes and text coloured; the browser's parser, no entities fetched. */
export function renderXml(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) return h("pre", { class: "payload" }, text);
  const pre = h("pre", { class: "payload xml" });
  const line = (depth, ...parts) => append(pre, ["  ".repeat(depth), ...parts, "\n"]);
  const tag = (s) => h("span", { class: "xml-tag" }, s);
  const open = (el, close) => [
    tag(`<${el.nodeName}`),
    [...el.attributes].map((a) => [" ", h("span", { class: "xml-attr" }, a.name), "=", h("span", { class: "xml-value" }, `"${a.value}"`)]),
    tag(close),
  ];
  const walk = (node, depth) => {
    if (node.nodeType === Node.COMMENT_NODE) return line(depth, h("span", { class: "xml-comment" }, `<!--${node.nodeValue}-->`));
    if (node.nodeType === Node.TEXT_NODE || node.nodeType === Node.CDATA_SECTION_NODE) {
      const value = node.nodeValue.trim();
      if (value) line(depth, value);
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) return;
    const kids = [...node.childNodes].filter((k) => !(k.nodeType === Node.TEXT_NODE && !k.nodeValue.trim()));
    if (!kids.length) return line(depth, open(node, "/>"));
    if (kids.length === 1 && kids[0].nodeType === Node.TEXT_NODE) {
      return line(depth, open(node, ">"), kids[0].nodeValue.trim(), tag(`</${node.nodeName}>`));
    }
    line(depth, open(node, ">"));
    kids.forEach((k) => walk(k, depth + 1));
    line(depth, tag(`</${node.nodeName}>`));
  };
  walk(doc.documentElement, 0);
  return pre;
}

/** JSON (FHIR) pretty-printed. */
export function renderJson(text) {
  try {
    return h("pre", { class: "payload json" }, JSON.stringify(JSON.parse(text), null, 2));
  } catch {
    return h("pre", { class: "payload" }, text);
  }
}

export function renderPayload(payload) {
  const ct = payload.content_type.toLowerCase();
  if (payload.encoding === "base64") {
    return h("div", {}, h("p", { class: "muted" }, `Binary payload (${payload.size} bytes), base64:`),
      h("pre", { class: "payload" }, payload.text.slice(0, 20000)));
  }
  if (ct.includes("hl7-v2") || payload.text.startsWith("MSH")) return renderHl7(payload.text);
  if (ct.includes("json")) return renderJson(payload.text);
  if (ct.includes("xml")) return renderXml(payload.text);
  return h("pre", { class: "payload" }, payload.text);
}
