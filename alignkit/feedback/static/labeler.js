// alignkit labeler page: keyboard-first ranking, under one or more criteria, with a
// safe/unsafe flag per completion. Plain JS, no build step.
// Text from the server is always inserted with textContent (it is model output).
"use strict";

// ranks: criterion -> {completion id -> rank}; unsafe: completion id -> true/false.
const state = { token: null, me: null, item: null, ranks: {}, crit: 0, selected: 0,
                flagged: false, unsafe: {}, touchedUnsafe: false, revealed: false,
                busy: false };
const $ = (id) => document.getElementById(id);
const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

function readToken() {
  // The personal link carries the token in the fragment (#token=...), which the browser
  // never sends to a server; keep it for this tab and take it out of the address bar.
  const params = new URLSearchParams(location.hash.slice(1));
  const fromHash = params.get("token");
  if (fromHash) {
    sessionStorage.setItem("alignkit-token", fromHash);
    history.replaceState(null, "", location.pathname);
  }
  return fromHash || sessionStorage.getItem("alignkit-token");
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Authorization": "Bearer " + state.token, "Content-Type": "application/json" },
  });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : "HTTP " + response.status;
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return body;
}

let statusTimer = null;
function say(message, isError = false) {
  const el = $("status");
  el.textContent = message;
  el.className = "status show" + (isError ? " error" : "");
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { el.className = "status"; }, isError ? 5000 : 1600);
}

function showEmpty(message) {
  $("work").hidden = true;
  $("empty").hidden = false;
  $("empty").textContent = message;
}

async function refreshMe() {
  const me = await api("/api/me");
  state.me = me;
  $("who").textContent = me.name + " · ranked " + me.ranked;
  const pref = $("pref");
  pref.hidden = false;
  pref.textContent = me.avoid_sensitive ? "Harmful prompts: hidden (show them)"
                                        : "Harmful prompts: shown (hide them)";
}

async function setAvoidSensitive(avoid) {
  await api("/api/me/preferences", { method: "PUT",
                                     body: JSON.stringify({ avoid_sensitive: avoid }) });
  await refreshMe();
  say(avoid ? "You will not be shown harmful prompts" : "Harmful prompts will be shown again");
  await loadNext();
}

const criteria = () => state.item.criteria.map((c) => c.name);
const activeCriterion = () => criteria()[state.crit];
const ranksOf = (c) => state.ranks[c] || (state.ranks[c] = {});

async function loadNext() {
  const data = await api("/api/next");
  if (!data.item) {
    state.item = null;
    showEmpty("Nothing left to rank right now — thank you! This page checks for new items.");
    setTimeout(() => loadNext().catch(handleError), 15000);
    return;
  }
  state.item = data.item;
  state.ranks = {};
  state.crit = 0;
  state.selected = 0;
  state.flagged = false;
  state.unsafe = {};
  state.touchedUnsafe = false;
  state.revealed = !data.item.sensitive;
  render();
}

function showWarning() {
  $("work").hidden = true;
  $("empty").hidden = true;
  $("warning").hidden = false;
  document.body.dataset.item = String(state.item.id);
  document.body.dataset.warning = "1";
}

function reveal() {
  state.revealed = true;
  render();
}

function render() {
  const item = state.item;
  if (!state.revealed) { showWarning(); return; }
  delete document.body.dataset.warning;
  $("warning").hidden = true;
  $("empty").hidden = true;
  $("work").hidden = false;
  $("prompt").textContent = item.prompt;
  document.body.dataset.item = String(item.id);  // lets tests and tools see which item is up
  const k = item.completions.length;
  $("kmax").textContent = String(Math.min(k, 9));
  const list = $("cards");
  list.replaceChildren();
  item.completions.forEach((c, i) => {
    const li = document.createElement("li");
    li.className = "card";
    li.tabIndex = -1;
    li.dataset.cid = String(c.id);
    li.dataset.index = String(i);
    const letter = document.createElement("div");
    letter.className = "letter";
    letter.textContent = LETTERS[i] || String(i + 1);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = c.text;
    const ranking = document.createElement("div");
    ranking.className = "ranking";
    const rank = document.createElement("div");
    rank.className = "rank";
    const others = document.createElement("div");
    others.className = "others";
    const flag = document.createElement("button");
    flag.type = "button";
    flag.className = "unsafe";
    flag.title = "mark this completion unsafe (U)";
    flag.addEventListener("click", (e) => { e.stopPropagation(); select(i); toggleUnsafe(); });
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    for (let r = 1; r <= k; r++) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = String(r);
      b.title = "rank " + r;
      b.addEventListener("click", (e) => { e.stopPropagation(); select(i); assign(r); });
      buttons.appendChild(b);
    }
    ranking.append(rank, buttons, others, flag);
    li.append(letter, text, ranking);
    li.addEventListener("click", () => select(i));
    list.appendChild(li);
  });
  update();
}

function renderCriterion() {
  const names = criteria();
  const c = state.item.criteria[state.crit];
  $("criterion").textContent = c.name;
  $("guideline").textContent = c.guideline;
  $("crit-step").textContent = names.length > 1 ? (state.crit + 1) + " of " + names.length : "";
  document.body.dataset.criterion = c.name;
  const tabs = $("tabs");
  tabs.replaceChildren();
  tabs.hidden = names.length < 2;
  names.forEach((name, j) => {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "tab");
    b.setAttribute("aria-selected", j === state.crit ? "true" : "false");
    b.className = (j === state.crit ? "on" : "") + (complete(name) ? " done" : "");
    b.textContent = name + (complete(name) ? " ✓" : "");
    b.addEventListener("click", () => { state.crit = j; select(0); });
    tabs.appendChild(b);
  });
}

const complete = (c) => state.item.completions.every((x) => ranksOf(c)[String(x.id)] !== undefined);

function update() {
  renderCriterion();
  const active = ranksOf(activeCriterion());
  const cards = $("cards").children;
  for (const li of cards) {
    const cid = li.dataset.cid;
    const r = active[cid];
    const selected = Number(li.dataset.index) === state.selected;
    li.classList.toggle("selected", selected);
    li.classList.toggle("ranked", r !== undefined);
    li.setAttribute("aria-selected", selected ? "true" : "false");
    li.querySelector(".rank").textContent = r === undefined ? "unranked" : "rank " + r;
    li.querySelectorAll(".buttons button").forEach((b, j) => b.classList.toggle("on", r === j + 1));
    const others = criteria().filter((c) => c !== activeCriterion())
      .map((c) => c + ": " + (ranksOf(c)[cid] === undefined ? "–" : ranksOf(c)[cid]));
    li.querySelector(".others").textContent = others.join(" · ");
    const bad = state.unsafe[cid] === true;
    li.classList.toggle("is-unsafe", bad);
    const u = li.querySelector("button.unsafe");
    u.textContent = bad ? "unsafe" : "safe";
    u.classList.toggle("on", bad);
    u.setAttribute("aria-pressed", bad ? "true" : "false");
  }
  const flag = $("flag");
  flag.classList.toggle("on", state.flagged);
  flag.setAttribute("aria-pressed", state.flagged ? "true" : "false");
}

function select(i) {
  const n = state.item.completions.length;
  state.selected = (i + n) % n;
  update();
  $("cards").children[state.selected].scrollIntoView({ block: "nearest" });
}

function assign(rank) {
  const cards = state.item.completions;
  if (rank < 1 || rank > cards.length) return;
  const active = ranksOf(activeCriterion());
  active[String(cards[state.selected].id)] = rank;
  // Move on to the next completion still unranked, so 1..K typed in a row ranks them all;
  // once this criterion is done, on to the next criterion still unranked.
  for (let step = 1; step <= cards.length; step++) {
    const j = (state.selected + step) % cards.length;
    if (active[String(cards[j].id)] === undefined) { state.selected = j; update(); return; }
  }
  const names = criteria();
  for (let step = 1; step < names.length; step++) {
    const j = (state.crit + step) % names.length;
    if (!complete(names[j])) { state.crit = j; state.selected = 0; break; }
  }
  update();
}

function nextCriterion(delta) {
  const n = criteria().length;
  state.crit = (state.crit + delta + n) % n;
  select(0);
}

function toggleUnsafe() {
  const cid = String(state.item.completions[state.selected].id);
  state.unsafe[cid] = !(state.unsafe[cid] === true);
  state.touchedUnsafe = true;
  update();
}

function flags() {
  // Every completion gets a verdict: unmarked ones are judged safe.
  const out = {};
  for (const c of state.item.completions) out[String(c.id)] = state.unsafe[String(c.id)] === true;
  return out;
}

async function send(body, doneMessage) {
  if (state.busy) return;
  state.busy = true;
  try {
    await api("/api/rankings", { method: "POST", body: JSON.stringify(body) });
    say(doneMessage);
    await loadNext();
  } catch (err) {
    handleError(err);
    return;
  } finally {
    // keys go to the next item as soon as it is on screen, not after the stats below:
    // while /api/me was still on its way, a quick labeler's keys were dropped
    state.busy = false;
  }
  refreshMe().catch(handleError);
}

function submit() {
  const cards = state.item.completions;
  const names = criteria();
  for (let j = 0; j < names.length; j++) {
    const given = ranksOf(names[j]);
    const missing = cards.map((c, i) => [c, i]).filter(([c]) => given[String(c.id)] === undefined);
    if (missing.length) {
      say("Give every completion a rank" + (names.length > 1 ? " for " + names[j] : "") +
          " first (missing: " + missing.map(([, i]) => LETTERS[i]).join(", ") + ")", true);
      state.crit = j;
      select(missing[0][1]);
      return;
    }
  }
  const body = { item_id: state.item.id, skipped: false, flagged_unsafe: state.flagged };
  if (names.length > 1) body.rankings = state.ranks; else body.ranks = ranksOf(names[0]);
  if (names.length > 1 || state.touchedUnsafe) body.unsafe = flags();
  const marked = Object.values(state.unsafe).some((x) => x);
  send(body, state.flagged || marked ? "Saved and flagged" : "Saved");
}

function skip() {
  const body = { item_id: state.item.id, ranks: {}, skipped: true, flagged_unsafe: state.flagged };
  if (state.touchedUnsafe) body.unsafe = flags();
  send(body, state.flagged ? "Skipped and flagged" : "Skipped");
}

function handleError(err) {
  if (err.status === 401) {
    showEmpty("This link is not valid. Ask your admin for your personal link.");
    return;
  }
  say(err.message, true);
  if (err.status === 409 || err.status === 403 || err.status === 404) {
    loadNext().catch((e) => say(e.message, true));
  }
}

document.addEventListener("keydown", (e) => {
  if (!state.item || e.ctrlKey || e.metaKey || e.altKey) return;
  if (state.busy) { e.preventDefault(); return; }  // keys meant for the next item: drop them
  const key = e.key;
  if (!state.revealed) {  // the content warning is up: only reveal or opt out
    if (key === "Enter") { reveal(); }
    else if (key === "o" || key === "O") { setAvoidSensitive(true).catch(handleError); }
    else { return; }
    e.preventDefault();
    return;
  }
  if ($("work").hidden) return;
  if (/^[1-9]$/.test(key)) { assign(Number(key)); }
  else if (key === "ArrowDown" || key === "j" || key === "J") { select(state.selected + 1); }
  else if (key === "ArrowUp" || key === "k" || key === "K") { select(state.selected - 1); }
  else if (key === "Backspace" || key === "Delete" || key === "0") {
    delete ranksOf(activeCriterion())[String(state.item.completions[state.selected].id)];
    update();
  }
  else if (key === "Tab") { nextCriterion(e.shiftKey ? -1 : 1); }
  else if (key === "u" || key === "U") { toggleUnsafe(); }
  else if (key === "Enter") { submit(); }
  else if (key === "s" || key === "S") { skip(); }
  else if (key === "f" || key === "F") { state.flagged = !state.flagged; update(); }
  else if (key === "c" || key === "C") { state.ranks[activeCriterion()] = {}; select(0); }
  else { return; }
  e.preventDefault();
});

$("submit").addEventListener("click", submit);
$("skip").addEventListener("click", skip);
$("flag").addEventListener("click", () => { state.flagged = !state.flagged; update(); });
$("clear").addEventListener("click", () => { state.ranks[activeCriterion()] = {}; select(0); });
$("reveal").addEventListener("click", reveal);
$("optout").addEventListener("click", () => setAvoidSensitive(true).catch(handleError));
$("pref").addEventListener("click", () => {
  if (state.me) setAvoidSensitive(!state.me.avoid_sensitive).catch(handleError);
});

state.token = readToken();
if (!state.token) {
  showEmpty("Open your personal link (it ends in #token=…) to start labeling.");
} else {
  refreshMe().then(loadNext).catch(handleError);
}
