// alignkit labeler page: keyboard-first ranking. Plain JS, no build step.
// Text from the server is always inserted with textContent (it is model output).
"use strict";

const state = { token: null, item: null, ranks: {}, selected: 0, flagged: false, busy: false };
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
  $("who").textContent = me.name + " · ranked " + me.ranked;
}

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
  state.selected = 0;
  state.flagged = false;
  render();
}

function render() {
  const item = state.item;
  $("empty").hidden = true;
  $("work").hidden = false;
  $("criterion").textContent = item.criterion;
  $("guideline").textContent = item.guideline;
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
    ranking.append(rank, buttons);
    li.append(letter, text, ranking);
    li.addEventListener("click", () => select(i));
    list.appendChild(li);
  });
  update();
}

function update() {
  const cards = $("cards").children;
  for (const li of cards) {
    const cid = li.dataset.cid;
    const r = state.ranks[cid];
    const selected = Number(li.dataset.index) === state.selected;
    li.classList.toggle("selected", selected);
    li.classList.toggle("ranked", r !== undefined);
    li.setAttribute("aria-selected", selected ? "true" : "false");
    li.querySelector(".rank").textContent = r === undefined ? "unranked" : "rank " + r;
    li.querySelectorAll(".buttons button").forEach((b, j) => b.classList.toggle("on", r === j + 1));
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
  state.ranks[String(cards[state.selected].id)] = rank;
  // Move on to the next completion still unranked, so 1..K typed in a row ranks them all.
  for (let step = 1; step <= cards.length; step++) {
    const j = (state.selected + step) % cards.length;
    if (state.ranks[String(cards[j].id)] === undefined) { state.selected = j; break; }
  }
  update();
}

async function send(body, doneMessage) {
  if (state.busy) return;
  state.busy = true;
  try {
    await api("/api/rankings", { method: "POST", body: JSON.stringify(body) });
    say(doneMessage);
    await loadNext();
    await refreshMe();
  } catch (err) {
    handleError(err);
  } finally {
    state.busy = false;
  }
}

function submit() {
  const cards = state.item.completions;
  const missing = cards.map((c, i) => [c, i]).filter(([c]) => state.ranks[String(c.id)] === undefined);
  if (missing.length) {
    say("Give every completion a rank first (missing: " +
        missing.map(([, i]) => LETTERS[i]).join(", ") + ")", true);
    select(missing[0][1]);
    return;
  }
  send({ item_id: state.item.id, ranks: state.ranks, skipped: false,
         flagged_unsafe: state.flagged }, state.flagged ? "Saved and flagged" : "Saved");
}

function skip() {
  send({ item_id: state.item.id, ranks: {}, skipped: true, flagged_unsafe: state.flagged },
       state.flagged ? "Skipped and flagged" : "Skipped");
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
  if (!state.item || $("work").hidden || e.ctrlKey || e.metaKey || e.altKey) return;
  if (state.busy) { e.preventDefault(); return; }  // keys meant for the next item: drop them
  const key = e.key;
  if (/^[1-9]$/.test(key)) { assign(Number(key)); }
  else if (key === "ArrowDown" || key === "j" || key === "J") { select(state.selected + 1); }
  else if (key === "ArrowUp" || key === "k" || key === "K") { select(state.selected - 1); }
  else if (key === "Backspace" || key === "Delete" || key === "0") {
    delete state.ranks[String(state.item.completions[state.selected].id)];
    update();
  }
  else if (key === "Enter") { submit(); }
  else if (key === "s" || key === "S") { skip(); }
  else if (key === "f" || key === "F") { state.flagged = !state.flagged; update(); }
  else if (key === "c" || key === "C") { state.ranks = {}; select(0); }
  else { return; }
  e.preventDefault();
});

$("submit").addEventListener("click", submit);
$("skip").addEventListener("click", skip);
$("flag").addEventListener("click", () => { state.flagged = !state.flagged; update(); });
$("clear").addEventListener("click", () => { state.ranks = {}; select(0); });

state.token = readToken();
if (!state.token) {
  showEmpty("Open your personal link (it ends in #token=…) to start labeling.");
} else {
  refreshMe().then(loadNext).catch(handleError);
}
