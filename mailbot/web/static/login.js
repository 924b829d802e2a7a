"use strict";
// The token goes to POST /api/session once; the page then carries it as an HttpOnly cookie.

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await post("/api/session", { token: document.getElementById("token").value });
    location.assign("/");
  } catch (error) {
    alertLine(String(error.message || error));
  }
});
