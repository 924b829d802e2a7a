"use strict";
// The outbox: every mail mailbot sends, with its delivery status; one not sent yet can be
// cancelled, one deferred, failed or suppressed tried again.

const CANCELLABLE = new Set(["held", "queued", "deferred"]);
const RETRYABLE = new Set(["deferred", "failed", "suppressed"]);

function actions(m) {
  const act = (name, label) => button(label, async () => {
    await post(`/api/outbox/${m.id}/${name}`);
    await show();
  }, { class: name });
  return [
    CANCELLABLE.has(m.status) ? act("cancel", "Cancel") : null,
    RETRYABLE.has(m.status) ? act("retry", "Retry") : null,
  ].filter(Boolean);
}

async function show() {
  const rows = await getJson("/api/outbox?limit=200");
  document.querySelector("#outbox tbody").replaceChildren(...rows.map((m) =>
    el("tr", { "data-id": m.id, "data-status": m.status },
      el("td", {}, when(m.created_at)), el("td", {}, m.recipient), el("td", {}, m.kind),
      el("td", {}, m.subject),
      el("td", {}, el("span", { class: `status ${m.status}` }, m.status), m.reason ? ` — ${m.reason}` : "",
        m.status === "deferred" && m.next_attempt_at ? ` (next try ${when(m.next_attempt_at)})` : ""),
      el("td", {}, m.attempts), el("td", {}, when(m.sent_at)),
      el("td", {}, m.inbound_id ? el("a", { href: `/messages/${m.inbound_id}` }, `message ${m.inbound_id}`) : ""),
      el("td", {}, ...actions(m)))));
}

show().catch((error) => alertLine(String(error.message || error)));
