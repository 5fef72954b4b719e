// Swagger UI for /openapi.json, from our own copy; a file (not an inline script) so the
// Content-Security-Policy can forbid inline scripts everywhere. No online validator.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null });
