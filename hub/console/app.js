// The console's entry point: session, navigation (hash routes), and the page in <main>.

import { api, session, can } from "./api.js";
import * as views from "./views.js";

const main = document.getElementById("main");
let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || "") };
}

function showChrome() {
  const who = session.who;
  document.getElementById("nav").hidden = !who;
  document.getElementById("logout").hidden = !who;
  document.getElementById("who").textContent = who ? `${who.name} · ${who.role}` : "";
  for (const link of document.querySelectorAll("nav a[data-role]")) link.hidden = !can(link.dataset.role);
}

async function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!session.who && session.token) {
    try { session.who = await api.get("/api/whoami"); } catch { session.token = null; }
  }
  showChrome();
  if (!session.who) {
    views.login(main, { onLogin: () => { showChrome(); if (!location.hash || location.hash === "#/login") location.hash = "#/dashboard"; else render(); } });
    return;
  }
  const { parts, params } = parseHash();
  const page = parts[0] || "dashboard";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  if (page === "messages" && parts[1]) cleanup = await views.trace(main, { id: parts[1] }) || null;
  else if (page === "messages") cleanup = views.messages(main, { params }) || null;
  else if (page === "content") cleanup = views.contentSearch(main) || null;
  else if (page === "dead") cleanup = views.dead(main, { params }) || null;
  else if (page === "reviews") cleanup = views.reviews(main, { params }) || null;
  else if (page === "audit" && can("admin")) cleanup = views.audit(main) || null;
  else cleanup = views.dashboard(main) || null;
}

window.addEventListener("hashchange", render);
window.addEventListener("hub:unauthorized", () => { session.token = null; session.who = null; render(); });
document.getElementById("logout").addEventListener("click", () => {
  session.token = null;
  session.who = null;
  location.hash = "#/login";
  render();
});
render();
