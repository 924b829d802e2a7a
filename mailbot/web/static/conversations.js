"use strict";
// The conversations: a list, and one conversation's thread with its participants' reply
// addresses (fingerprints only) and a button to revoke each.

const key = decodeURIComponent(location.pathname.replace(/^\/conversations\/?/, ""));

async function showList() {
  const list = await getJson("/api/conversations?limit=200");
  document.querySelector("#conversations tbody").replaceChildren(...list.map((c) =>
    el("tr", { "data-key": c.key },
      el("td", {}, el("a", { href: `/conversations/${encodeURIComponent(c.key)}` }, c.key)),
      el("td", {}, c.subject), el("td", {}, c.bot),
      el("td", {}, c.participants), el("td", {}, c.comments),
      el("td", {}, when(c.last_comment_at)))));
  document.getElementById("list").hidden = false;
}

async function showThread() {
  const c = await getJson(`/api/conversations/${encodeURIComponent(key)}`);
  document.title = `mailbot · ${c.subject || c.key}`;
  document.getElementById("title").textContent = c.subject || c.key;
  document.getElementById("about").textContent = `${c.key} · bot ${c.bot} · since ${when(c.created_at)}`;
  document.getElementById("comments").replaceChildren(...c.comments.map((m) =>
    el("li", {},
      el("div", { class: "meta" }, `${m.author || "someone"} · ${when(m.created_at)} `,
        m.inbound_id ? el("a", { href: `/messages/${m.inbound_id}` }, "the mail") : null),
      el("pre", {}, m.body))));
  const rows = [];
  for (const p of c.participants) {
    const who = p.name ? `${p.name} <${p.email}>` : p.email;
    const tokens = p.tokens.length ? p.tokens : [null];
    for (const t of tokens) {
      rows.push(el("tr", { "data-token": t ? t.id : "" },
        el("td", {}, who + (p.suspended ? " (suspended: bounced)" : "")),
        el("td", {}, t ? `reply+…${t.fingerprint}` : "none yet"),
        el("td", {}, t ? when(t.expires_at) : ""),
        el("td", {}, t ? (t.revoked_at ? `revoked ${when(t.revoked_at)}` : t.live ? "live" : "expired") : ""),
        el("td", {}, t && t.live ? button("Revoke", async () => {
          await post(`/api/tokens/${t.id}/revoke`);
          await showThread();
        }, { class: "revoke" }) : null)));
    }
  }
  document.querySelector("#participants tbody").replaceChildren(...rows);
  document.getElementById("thread").hidden = false;
}

(key ? showThread() : showList()).catch((error) => alertLine(String(error.message || error)));
