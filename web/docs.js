// The API reference: Swagger UI over this server's own /openapi.json. Every
// file comes from this server; nothing is fetched from anywhere else.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    // Never ask validator.swagger.io for a badge.
    validatorUrl: null,
    // No ?url= or ?configUrl= from the address bar: the page shows this
    // server's document only.
    queryConfigEnabled: false,
    deepLinking: true,
    docExpansion: "list",
    filter: true,
    persistAuthorization: false,
  });
});
