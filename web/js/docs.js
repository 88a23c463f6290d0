// Swagger UI over this server's own OpenAPI document, for /api/docs. A file of its own, not an inline script:
// the page's Content-Security-Policy allows none. The bundle is vendored (web/vendor/swagger-ui), nothing
// comes from elsewhere: no validator badge (it would send the document to validator.swagger.io).
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
  // a pasted token lives in this page's memory only, never in the browser's storage
  persistAuthorization: false,
  displayRequestDuration: true,
});
