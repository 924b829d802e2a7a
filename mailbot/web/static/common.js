"use strict";
// Shared by the pages: DOM built from text only (never innerHTML), and value formatting.

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function addresses(list) {
  return (list || []).map((a) => a.address || a.email || a.name || "").filter(Boolean).join(", ");
}

function spamText(spam) {
  if (!spam) return "";
  if (spam.scanned === false) return "not scanned";
  if (spam.score !== undefined) return `${spam.score}${spam.is_spam ? " spam" : ""}`;
  return "";
}

function dmarcText(auth) {
  if (!auth) return "";
  const d = auth.dmarc || (auth.from && auth.from.dmarc);
  if (!d) return auth.result || "";
  return typeof d === "string" ? d : d.result || "";
}

function outcomeText(m) {
  if (m.reason) return m.reason;
  const o = m.outcome || {};
  return o.via ? `matched by ${o.via}` : "";
}

// A write to the API: JSON in and out, the error said in words.
async function post(path, body, method) {
  const answer = await fetch(path, {
    method: method || "POST",
    headers: { accept: "application/json", "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

async function getJson(path) {
  const answer = await fetch(path, { headers: { accept: "application/json" } });
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

function button(label, onClick, attrs) {
  const node = el("button", { type: "button", ...(attrs || {}) }, label);
  node.addEventListener("click", async () => {
    node.disabled = true;
    try { await onClick(); } catch (error) { alertLine(String(error.message || error)); }
    node.disabled = false;
  });
  return node;
}

function alertLine(text) {
  const box = document.getElementById("notice");
  if (box) { box.textContent = text; box.hidden = !text; }
}
