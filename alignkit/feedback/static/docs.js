// alignkit API reference: rendered here from /openapi.json, so it works offline and under
// the app's Content-Security-Policy (Swagger UI would load its scripts from a CDN).
// Everything from the schema is inserted with textContent.
"use strict";

const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function resolve(spec, schema) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 10; i++) {
    s = s.$ref.split("/").slice(1).reduce((o, k) => (o || {})[k], spec) || {};
  }
  return s;
}

function typeName(spec, schema) {
  const s = resolve(spec, schema);
  if (schema && schema.$ref) return schema.$ref.split("/").pop();
  if (s.anyOf) return s.anyOf.map((x) => typeName(spec, x)).join(" | ");
  if (s.type === "array") return typeName(spec, s.items) + "[]";
  if (s.type === "object" && s.additionalProperties) {
    return "{string: " + typeName(spec, s.additionalProperties) + "}";
  }
  return s.type || "object";
}

function fields(spec, schema) {
  const s = resolve(spec, schema);
  const table = el("table");
  const head = el("tr");
  ["Field", "Type", "Required", "Description"].forEach((h) => head.appendChild(el("th", "", h)));
  table.appendChild(head);
  const required = new Set(s.required || []);
  for (const [name, prop] of Object.entries(s.properties || {})) {
    const tr = el("tr");
    tr.appendChild(el("td", "", name));
    tr.appendChild(el("td", "", typeName(spec, prop)));
    tr.appendChild(el("td", "", required.has(name) ? "yes" : ""));
    tr.appendChild(el("td", "", resolve(spec, prop).description || prop.description || ""));
    table.appendChild(tr);
  }
  return table;
}

function render(spec) {
  document.getElementById("about").textContent = (spec.info.description || "") +
    " (version " + spec.info.version + ")";
  const ops = document.getElementById("ops");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const panel = el("div", "panel");
      panel.appendChild(el("h2", "", method.toUpperCase() + " " + path));
      if (op.summary) panel.appendChild(el("p", "", op.summary));
      if (op.description) panel.appendChild(el("p", "help", op.description));
      const body = op.requestBody && op.requestBody.content["application/json"];
      if (body) {
        panel.appendChild(el("div", "label", "Request body: " + typeName(spec, body.schema)));
        panel.appendChild(fields(spec, body.schema));
      }
      const codes = Object.entries(op.responses || {})
        .map(([code, r]) => code + " " + (r.description || "")).join(" · ");
      panel.appendChild(el("p", "help", "Responses: " + codes));
      ops.appendChild(panel);
    }
  }
}

fetch("/openapi.json").then((r) => r.json()).then(render).catch((e) => {
  document.getElementById("about").textContent = "Could not load /openapi.json: " + e.message;
});
