// Swagger UI for /openapi.json, from our own copy; a file (not an inline script) so the
// Content-Security-Policy can forbid inline scripts everywhere. No online validator. No deep
// links: they put a link inside each operation's toggle button (a control inside a control).
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: false, validatorUrl: null });
