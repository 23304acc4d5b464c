// The sidecar's /docs: Swagger UI on the document this sidecar serves (/openapi.json).
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: new URL(root.dataset.specUrl, window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    validatorUrl: null, // no badge fetched from another host
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
