"use strict";
// The outbox: every mail mailbot sends, with its delivery status; a held or queued one can
// be cancelled.

async function show() {
  const rows = await getJson("/api/outbox?limit=200");
  document.querySelector("#outbox tbody").replaceChildren(...rows.map((m) =>
    el("tr", { "data-id": m.id, "data-status": m.status },
      el("td", {}, when(m.created_at)), el("td", {}, m.recipient), el("td", {}, m.kind),
      el("td", {}, m.subject),
      el("td", {}, el("span", { class: `status ${m.status}` }, m.status), m.reason ? ` — ${m.reason}` : ""),
      el("td", {}, m.attempts), el("td", {}, when(m.sent_at)),
      el("td", {}, m.inbound_id ? el("a", { href: `/messages/${m.inbound_id}` }, `message ${m.inbound_id}`) : ""),
      el("td", {}, m.status === "held" || m.status === "queued"
        ? button("Cancel", async () => { await post(`/api/outbox/${m.id}/cancel`); await show(); }, { class: "cancel" })
        : null))));
}

show().catch((error) => alertLine(String(error.message || error)));
