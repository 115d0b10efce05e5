// alignkit admin page: progress, pace, labelers and agreement, refreshed every 5 s.
// Text from the server is always inserted with textContent.
"use strict";

const $ = (id) => document.getElementById(id);

function readToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("alignkit-admin-token", fromHash);
    history.replaceState(null, "", location.pathname);
  }
  return fromHash || sessionStorage.getItem("alignkit-admin-token");
}

const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function cell(row, value, numeric = false) {
  const td = document.createElement("td");
  if (value instanceof Node) td.appendChild(value); else td.textContent = value;
  if (numeric) td.className = "num";
  row.appendChild(td);
  return td;
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

function render(s) {
  const p = s.progress, t = s.throughput, a = s.agreement;
  $("progress").textContent = Math.round(p.fraction * 100) + "%";
  $("progress-bar").style.width = Math.round(p.fraction * 100) + "%";
  $("progress-detail").textContent = p.items_complete + " of " + p.items + " items complete; " +
    p.rankings + " of " + p.rankings_needed + " rankings (overlap " + p.overlap + ")";
  $("thr-hour").textContent = t.last_hour + " / h";
  $("thr-detail").textContent = t.last_10_min + " in the last 10 min" +
    (t.per_hour === null ? "" : "; " + t.per_hour + " per hour overall");
  $("agreement").textContent = a.agreement === null ? "–" : Math.round(a.agreement * 100) + "%";
  $("source").textContent = "labels from: " + (a.source || "nobody yet");
  $("kendall").textContent = fmt(a.kendall_w_mean);
  $("alpha").textContent = fmt(a.krippendorff_alpha);
  const fl = s.flags || { flags: 0, unsafe: 0, agreement: null };
  $("flags").textContent = fl.flags ? fl.unsafe + " / " + fl.flags : "–";
  $("flags-detail").textContent = fl.flags ? "unsafe of all flags; agreement " +
    (fl.agreement === null ? "–" : Math.round(fl.agreement * 100) + "%") : "no flags yet";
  const crit = $("criteria");
  crit.replaceChildren();
  for (const c of s.criteria || []) {
    const tr = document.createElement("tr");
    cell(tr, c.criterion);
    cell(tr, String(c.rankings), true);
    cell(tr, Math.round(c.fraction * 100) + "%", true);
    cell(tr, String(c.items_complete), true);
    cell(tr, c.agreement === null ? "–" : Math.round(c.agreement * 100) + "%", true);
    cell(tr, fmt(c.kendall_w_mean), true);
    cell(tr, fmt(c.krippendorff_alpha), true);
    crit.appendChild(tr);
  }
  $("sensitive").textContent = s.sensitive_items + " items are harmful requests (shown after " +
    "a content warning); " + s.labelers_avoiding_sensitive + " labelers opted out of them.";

  const low = s.low_agreement_labelers;
  $("low").textContent = low.length
    ? "Flagged: " + low.join(", ") + " agree with the majority far less than the others do."
    : "No labeler's agreement with the majority is far below the rest.";
  const body = $("labelers");
  body.replaceChildren();
  for (const l of s.labelers) {
    const tr = document.createElement("tr");
    if (l.low_agreement) tr.className = "low";
    const name = document.createElement("span");
    name.textContent = l.name + " ";
    if (l.low_agreement) name.appendChild(span("badge", "low agreement"));
    cell(tr, name);
    cell(tr, span("kind", l.kind));
    cell(tr, String(l.rankings), true);
    cell(tr, String(l.skipped), true);
    cell(tr, String(l.flagged_unsafe), true);
    cell(tr, l.agreement_with_majority === null ? "–" :
      Math.round(l.agreement_with_majority * 100) + "% (" + l.comparable_pairs + " pairs)", true);
    cell(tr, l.seconds_per_item === null ? "–" : String(Math.round(l.seconds_per_item)), true);
    cell(tr, l.last_active.replace("T", " ").slice(0, 19));
    body.appendChild(tr);
  }
  const disputed = $("disputed");
  disputed.replaceChildren();
  for (const d of a.most_disputed) {
    const tr = document.createElement("tr");
    cell(tr, "#" + d.item_id, true);
    cell(tr, d.criterion);
    cell(tr, d.prompt);
    cell(tr, String(d.labelers), true);
    cell(tr, d.agreement === null ? "–" : Math.round(d.agreement * 100) + "%", true);
    disputed.appendChild(tr);
  }
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refresh(token) {
  const response = await fetch("/api/admin/summary", {
    headers: { "Authorization": "Bearer " + token },
  });
  if (response.status === 401) {
    $("dash").hidden = true;
    $("denied").hidden = false;
    $("denied").textContent = "Admin token missing or wrong: open /admin#token=ADMIN_TOKEN " +
      "(printed by `alignkit label serve`).";
    return false;
  }
  render(await response.json());
  $("denied").hidden = true;
  $("dash").hidden = false;
  return true;
}

const token = readToken();
if (!token) {
  $("denied").hidden = false;
  $("denied").textContent = "Open /admin#token=ADMIN_TOKEN to see the dashboard.";
} else {
  const loop = () => refresh(token).then((ok) => { if (ok) setTimeout(loop, 5000); })
    .catch(() => setTimeout(loop, 5000));
  loop();
}
