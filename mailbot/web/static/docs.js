"use strict";
// Swagger UI from our own files (the swagger-ui-bundle package: Swagger UI 4), over our own
// description. Swagger UI 4 reads OpenAPI 3.0 only; FastAPI writes 3.1, whose few new forms
// (a null type in anyOf) it still draws, so it is told 3.0 here. /openapi.json stays 3.1.
fetch("/openapi.json", { headers: { accept: "application/json" } })
  .then((answer) => answer.json())
  .then((spec) => {
    spec.openapi = "3.0.3";
    window.SwaggerUIBundle({ spec, dom_id: "#swagger-ui", deepLinking: true });
  });
