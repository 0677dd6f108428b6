// The textenv labelling page. Completions are model output: they are only ever set with
// textContent (never innerHTML), so markup in them is shown literally.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null; // the server's state: question, progress, ...
let order = []; // rank mode: display numbers in the current order, best first
let typed = []; // rank mode: display numbers typed so far, best first
let busy = false; // a request is in flight: ignore input (no double answers)

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// "1 answer", "2 answers".
function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function say(text) {
  const m = $("msg");
  m.textContent = text || "";
  m.hidden = !text;
}

async function call(method, path, body) {
  if (busy) return;
  busy = true;
  try {
    const opts = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    // Relative URL: works under /t/TOKEN/ as well as at /.
    const r = await fetch(path, opts);
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (!r.ok) {
      say((data && data.error) || `the server answered ${r.status}`);
      if (data && data.state) show(data.state, true);
      return;
    }
    say("");
    show(data, false);
  } catch (e) {
    say("cannot reach the labelling server (is it running?): " + e);
  } finally {
    busy = false;
  }
}

function send(action, extra) {
  const q = state && state.question;
  if (!q) return;
  call("POST", "api/" + action, Object.assign({ qid: q.qid, shown: q.shown }, extra || {}));
}

function undo() {
  call("POST", "api/undo", {});
}

function showProgress(s) {
  const p = s.progress;
  const pct = p.questions ? Math.round((100 * p.complete) / p.questions) : 100;
  $("progress-text").textContent =
    `${p.complete} of ${count(p.questions, "question")} complete · ` +
    `${count(p.answers, "answer")} in all · ` +
    `you: ${p.mine} answered, ${p.left_for_me} left`;
  $("bar-fill").style.width = pct + "%";
  $("who").textContent = `labeller ${s.labeller} · ${s.answers_file}`;
}

function show(s, keepTyped) {
  const sameQuestion =
    state && state.question && s.question && state.question.qid === s.question.qid;
  state = s;
  showProgress(s);
  $("undo").disabled = !s.can_undo;
  $("undo-done").disabled = !s.can_undo;
  if (s.done) {
    $("ask").hidden = true;
    $("done").hidden = false;
    const p = s.progress;
    let text = `You answered ${count(p.mine, "question")}; ${s.answers_file} holds ` +
      `${count(p.answers, "answer")}.`;
    if (s.skipped) text += ` You skipped ${count(s.skipped, "question")}.`;
    if (p.complete < p.questions && !s.skipped) text += " The rest are with other labellers.";
    $("done-title").textContent = s.skipped ? "Only your skipped questions are left" : "All done";
    $("done-text").textContent = text;
    $("unskip").hidden = !s.skipped;
    return;
  }
  $("done").hidden = true;
  $("ask").hidden = false;
  const q = s.question;
  if (!(keepTyped && sameQuestion)) {
    order = q.completions.map((_, i) => i + 1);
    typed = [];
  }
  $("q-title").textContent = `Question ${q.item + 1} of ${s.progress.questions}`;
  $("prompt").textContent = q.prompt;
  $("tie").hidden = !q.can_tie;
  $("skip").hidden = !q.can_skip;
  $("submit-rank").hidden = q.mode !== "rank";
  $("typed").hidden = q.mode !== "rank";
  if (q.mode === "pairs") renderPair(q);
  else renderRank(q);
}

function renderPair(q) {
  $("instructions").textContent =
    "Which completion is better? Click it or press 1 or 2 (T: equally good, S: skip, U: undo).";
  const box = $("choices");
  box.className = "pairs";
  box.replaceChildren();
  q.completions.forEach((text, i) => {
    const card = el("div", "card");
    card.tabIndex = 0;
    card.dataset.number = String(i + 1);
    card.setAttribute("role", "button");
    card.append(el("div", "badge", String(i + 1)), el("div", "text", text));
    card.addEventListener("click", () => send("answer", { order: [i + 1] }));
    box.append(card);
  });
}

function renderRank(q) {
  $("instructions").textContent =
    "Rank the completions, best at the top: drag them, use the arrows, or type their numbers " +
    "best first; then Enter (Backspace: undo a typed number, S: skip, U: undo last answer).";
  const box = $("choices");
  box.className = "rank";
  box.replaceChildren();
  order.forEach((d, pos) => {
    const card = el("div", "card");
    card.draggable = true;
    card.dataset.number = String(d);
    if (typed.includes(d)) card.classList.add("typed");
    const moves = el("div", "moves");
    const up = el("button", "up", "▲");
    const down = el("button", "down", "▼");
    up.type = down.type = "button";
    up.title = "move up";
    down.title = "move down";
    up.disabled = pos === 0;
    down.disabled = pos === order.length - 1;
    up.addEventListener("click", (e) => { e.stopPropagation(); move(pos, pos - 1); });
    down.addEventListener("click", (e) => { e.stopPropagation(); move(pos, pos + 1); });
    moves.append(up, down);
    card.append(
      el("div", "rankpos", "#" + (pos + 1)),
      el("div", "badge", String(d)),
      el("div", "text", q.completions[d - 1]),
      moves,
    );
    card.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("text/plain", String(pos));
      card.classList.add("dragging");
    });
    card.addEventListener("dragend", () => card.classList.remove("dragging"));
    card.addEventListener("dragover", (e) => { e.preventDefault(); card.classList.add("over"); });
    card.addEventListener("dragleave", () => card.classList.remove("over"));
    card.addEventListener("drop", (e) => {
      e.preventDefault();
      const from = parseInt(e.dataTransfer.getData("text/plain"), 10);
      if (!Number.isNaN(from)) move(from, pos);
    });
    box.append(card);
  });
  $("typed").textContent = typed.length
    ? `typed, best first: ${typed.join(" ")} ` + "_ ".repeat(order.length - typed.length)
    : `type the numbers best first (1-${order.length}), or drag`;
}

function move(from, to) {
  if (to < 0 || to >= order.length || from === to) return;
  const [d] = order.splice(from, 1);
  order.splice(to, 0, d);
  typed = [];
  renderRank(state.question);
}

function typeNumber(d) {
  if (typed.includes(d)) return;
  typed.push(d);
  if (typed.length === order.length - 1) {
    typed.push(order.find((x) => !typed.includes(x)));
  }
  order = typed.concat(order.filter((x) => !typed.includes(x)));
  renderRank(state.question);
}

document.addEventListener("keydown", (e) => {
  if (!state || busy || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.toLowerCase();
  if (key === "u") return undo();
  if (state.done) return;
  const q = state.question;
  const n = parseInt(e.key, 10);
  if (q.mode === "pairs") {
    if (n === 1 || n === 2) send("answer", { order: [n] });
    else if (key === "t") send("tie");
    else if (key === "s") send("skip");
    return;
  }
  if (n >= 1 && n <= order.length) typeNumber(n);
  else if (key === "enter") { e.preventDefault(); send("answer", { order: order.slice() }); }
  else if (key === "backspace") {
    typed.pop();
    renderRank(q);
  } else if (key === "escape") {
    typed = [];
    renderRank(q);
  } else if (key === "s") send("skip");
});

$("tie").addEventListener("click", () => send("tie"));
$("skip").addEventListener("click", () => send("skip"));
$("undo").addEventListener("click", undo);
$("undo-done").addEventListener("click", undo);
$("unskip").addEventListener("click", () => call("POST", "api/unskip", {}));
$("submit-rank").addEventListener("click", () => send("answer", { order: order.slice() }));

// ?labeller=NAME in the page's URL names this browser's labeller (kept in a cookie).
const wanted = new URLSearchParams(location.search).get("labeller");
call("GET", "api/state" + (wanted ? "?labeller=" + encodeURIComponent(wanted) : ""));
