"use strict";
// One message: what the API knows of it, its timeline, and its HTML body in a sandboxed
// iframe served under a CSP that runs no script and loads nothing remote.

const id = location.pathname.split("/").pop();

function fill(selector, text) {
  const node = document.querySelector(selector);
  node.textContent = text || "";
  node.classList.toggle("none", !text);
}

async function json(path) {
  const answer = await fetch(path, { headers: { accept: "application/json" } });
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

function summary(m) {
  const items = [
    ["Status", m.status + (m.reason ? ` — ${m.reason}` : "")],
    ["From", addresses(m.from)],
    ["Envelope", `${m.envelope.mail_from || "<>"} → ${(m.envelope.rcpt_tos || []).join(", ")}`],
    ["Received", when(m.received_at)],
    ["Conversation", m.conversation || ""],
    ["Bot", m.bot || ""],
    ["Spam", spamText(m.spam)],
    ["DMARC", dmarcText(m.authentication)],
  ];
  document.getElementById("summary").replaceChildren(
    ...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function timeline(t) {
  document.getElementById("timeline").replaceChildren(...t.steps.map((s) =>
    el("li", { class: /^(refused|failed)/.test(s.result || "") ? "bad" : "" },
      el("span", { class: "stage" }, s.stage),
      el("time", { datetime: s.at }, when(s.at)),
      el("span", { class: "ms" }, s.ms !== undefined ? `${s.ms} ms` : ""),
      el("span", { class: "result" }, s.result || ""))));
}

const FINAL = ["delivered", "rejected", "bounced", "quarantined", "failed"];

function actions(m) {
  const list = [];
  if (m.status === "quarantined") {
    list.push(button("Release", async () => {
      await post(`/api/quarantine/${id}/release`);
      await untilFinal();
    }, { id: "release" }));
    list.push(button("Delete", async () => {
      await post(`/api/quarantine/${id}`, undefined, "DELETE");
      location.assign("/");
    }, { id: "delete" }));
  }
  if (m.spam && m.spam.scanned !== false) {
    for (const kind of ["spam", "ham"]) {
      list.push(button(`Learn as ${kind}`, async () => {
        const done = await post(`/api/messages/${id}/learn`, { kind });
        alertLine(`taught as ${done.as}: ${done.new_to_spamd ? "learned" : "already known to spamd"}`);
      }, { class: `learn-${kind}` }));
    }
  }
  document.getElementById("actions").replaceChildren(...list);
}

// After a release the message goes through the pipeline again: show each step as it lands.
async function untilFinal() {
  for (let i = 0; i < 120; i++) {
    const m = await main();
    if (FINAL.includes(m.status)) return;
    await new Promise((done) => setTimeout(done, 250));
  }
}

async function main() {
  const m = await json(`/api/messages/${id}`);
  document.title = `mailbot · ${m.subject || "(no subject)"}`;
  fill("#subject", m.subject || "(no subject)");
  summary(m);
  actions(m);
  fill("#reply", m.reply_text);
  fill("#signature", m.signature);
  fill("#quote", m.quote);
  const error = (m.outcome || {}).error;
  document.getElementById("failure").hidden = !error;
  if (error) {
    fill("#failure-attempt", `attempt ${error.attempt} of this message`);
    fill("#traceback", error.traceback);
  }
  const cut = (m.outcome || {}).cut || {};
  document.getElementById("signature-rule").textContent = cut.signature ? `cut by ${cut.signature}` : "";
  document.getElementById("quote-rule").textContent = cut.quote ? `cut at ${cut.quote}` : "";
  const parsed = m.parsed || {};
  if (parsed.html) {
    document.getElementById("html").src = `/api/messages/${id}/html`;
    document.getElementById("html-part").hidden = false;
  }
  document.querySelector("#headers tbody").replaceChildren(...(parsed.headers || []).map(
    ([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, value))));
  document.getElementById("attachments").replaceChildren(...(m.attachments || []).map((a) =>
    el("li", {}, a.removed ? `${a.filename || "attachment"} (${a.removed})`
      : el("a", { href: a.url, download: "" }, a.filename || `attachment ${a.n}`),
      ` ${a.content_type}, ${a.size} bytes`)));
  document.getElementById("raw").href = `/api/messages/${id}/raw`;
  fill("#json", JSON.stringify(m, null, 2));
  timeline(await json(`/api/messages/${id}/timeline`));
  return m;
}

main().catch((error) => fill("#subject", `Could not load this message: ${error.message}`));
