"use strict";
// The live inbox: the newest mail from the API, then every change over a WebSocket that
// reconnects by itself and asks for what it missed (?since= the newest change it saw).

const STATUSES = ["pending", "processing", "delivered", "rejected", "bounced", "quarantined", "failed"];
const rows = new Map(); // id -> message JSON
let since = null; // the newest updated_at seen
let socket = null;
let retry = 500;
let oldest = null;

const params = new URLSearchParams(location.search);
const q = document.getElementById("q");
q.value = params.get("q") || "";

function query() { return q.value.trim(); }

function setLive(state, text) {
  const live = document.getElementById("live");
  live.className = `live ${state}`;
  live.textContent = text;
}

function note(list) {
  for (const m of list) {
    rows.set(m.id, m);
    if (!since || m.updated_at > since) since = m.updated_at;
    if (oldest === null || m.id < oldest) oldest = m.id;
  }
}

function render() {
  const body = document.querySelector("#inbox tbody");
  const sorted = [...rows.values()].sort((a, b) => b.id - a.id);
  body.replaceChildren(...sorted.map(row));
  document.getElementById("empty").hidden = sorted.length > 0;
}

function row(m) {
  const link = el("a", { href: `/messages/${m.id}` }, m.subject || "(no subject)");
  return el("tr", { "data-id": m.id, "data-status": m.status },
    el("td", {}, when(m.received_at)),
    el("td", {}, addresses(m.from) || (m.envelope || {}).mail_from || ""),
    el("td", {}, ((m.envelope || {}).rcpt_tos || []).join(", ")),
    el("td", {}, link),
    el("td", {}, el("span", { class: `status ${m.status}` }, m.status)),
    el("td", {}, spamText(m.spam)),
    el("td", {}, dmarcText(m.authentication)),
    el("td", {}, m.bot || ""),
    el("td", {}, outcomeText(m)),
  );
}

async function load(before) {
  const url = new URL("/api/messages", location.origin);
  url.searchParams.set("limit", "100");
  if (query()) url.searchParams.set("q", query());
  if (before) url.searchParams.set("before", String(before));
  const answer = await fetch(url, { headers: { accept: "application/json" } });
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  note(data);
  document.getElementById("more").hidden = data.length < 100;
  render();
}

function connect() {
  const url = new URL("/api/live", location.origin);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (since) url.searchParams.set("since", since);
  if (query()) url.searchParams.set("q", query());
  const ws = new WebSocket(url);
  socket = ws;
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "ready") { retry = 500; setLive("on", "live"); }
    if (data.type === "messages") { note(data.messages); render(); }
    if (data.more) load().catch(() => {}); // missed more than one answer holds: reload the list
  };
  ws.onclose = () => {
    if (socket !== ws) return; // replaced by a new search
    setLive("off", "reconnecting…");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

async function restart() {
  rows.clear(); since = null; oldest = null;
  const next = new URLSearchParams(location.search);
  if (query()) next.set("q", query()); else next.delete("q");
  history.replaceState(null, "", next.toString() ? `?${next}` : location.pathname);
  try {
    await load();
    document.getElementById("problems").hidden = true;
  } catch (error) {
    const p = document.getElementById("problems");
    p.textContent = String(error.message || error);
    p.hidden = false;
  }
  if (!since) since = new Date().toISOString();
  const old = socket; socket = null;
  if (old) old.close();
  connect();
}

document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  restart();
});
document.getElementById("more").addEventListener("click", () => load(oldest));
document.getElementById("statuses").append(...STATUSES.map((s) => {
  const chip = el("button", { type: "button", class: `chip status ${s}` }, s);
  chip.addEventListener("click", () => {
    const others = query().split(/\s+/).filter((t) => t && !t.startsWith("status:"));
    q.value = [...others, `status:${s}`].join(" ");
    restart();
  });
  return chip;
}));
// A temporary address (the inspector bot): made on a click, shown once (it is not shown
// again anywhere: a credential), and the inbox filtered to its conversation.
document.getElementById("temporary-new").addEventListener("click", async () => {
  try {
    const made = await post("/api/inspector", { ttl_seconds: 3600 });
    document.getElementById("temporary-address").textContent = made.address;
    document.getElementById("temporary-expires").textContent =
      `(until ${when(made.expires_at)})`;
    document.getElementById("temporary-shown").hidden = false;
    alertLine("");
    q.value = `conversation:${made.conversation}`;
    restart();
  } catch (error) {
    alertLine(String(error.message || error));
  }
});
document.getElementById("temporary-copy").addEventListener("click", () => {
  const text = document.getElementById("temporary-address").textContent;
  navigator.clipboard.writeText(text).then(() => alertLine("copied"), () => alertLine(text));
});
restart();
