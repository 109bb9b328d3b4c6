// The agents' page: takes the next task, shows its script, the subscriber's masked
// number and the details the catalogue shows to agents, keeps the task held while it is
// shown, records an outcome or a call back (picked in the team's time zone). Every call
// carries the agent's token from sessionStorage (never the URL); everything shown is set
// as text, never as HTML.
"use strict";

const KEY = "campaignd-agent-token";
let current = null;

// A shown task's hold is renewed well inside its 15 minutes, so an agent on a long call
// never loses it. `?renew_every=SECONDS` (1 to 300) shortens the interval, for tests.
const RENEW_DEFAULT_S = 300;
const RENEW_EVERY_MS = (() => {
  const raw = new URLSearchParams(location.search).get("renew_every");
  const n = raw === null ? NaN : Number(raw);
  return (Number.isInteger(n) && n >= 1 && n <= 300 ? n : RENEW_DEFAULT_S) * 1000;
})();
let heartbeat = null;

function startHeartbeat() {
  stopHeartbeat();
  heartbeat = setInterval(() => renew(true), RENEW_EVERY_MS);
  document.body.dataset.heartbeat = "on";
}

function stopHeartbeat() {
  if (heartbeat !== null) clearInterval(heartbeat);
  heartbeat = null;
  document.body.dataset.heartbeat = "off";
}

// The team's zone (`timezone` of the task): times are shown and picked in it, whatever
// the browser's zone, since the agent agrees a time with a subscriber of that region.
function zoneOf(task) {
  return task && task.timezone ? task.timezone : null;
}

// `zone`'s offset from UTC at the instant `ms`, in minutes (+480 for Asia/Shanghai).
function offsetMinutes(zone, ms) {
  const f = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const p = {};
  for (const part of f.formatToParts(new Date(ms))) p[part.type] = part.value;
  const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  return Math.round((asUtc - ms) / 60000);
}

// A picked wall-clock time (`YYYY-MM-DDTHH:MM[:SS]`) in `zone`, as RFC 3339 with that
// zone's offset then (`2026-12-01T18:30:00+08:00`); null when it does not read as one.
function zonedRfc3339(local, zone) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(local);
  if (!m) return null;
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
  // The offset at the wall time read as UTC is off by at most a change of offset (a DST
  // switch between the two instants): once more from the instant it gives.
  let off = offsetMinutes(zone, wall);
  off = offsetMinutes(zone, wall - off * 60000);
  const sign = off < 0 ? "-" : "+";
  const abs = Math.abs(off);
  const pad = (n) => String(n).padStart(2, "0");
  return m[1] + "-" + m[2] + "-" + m[3] + "T" + m[4] + ":" + m[5] + ":" + (m[6] || "00") +
    sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
}

const $ = (id) => document.getElementById(id);

function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.hidden = !text;
}

function status(text) {
  $("status").textContent = text;
}

function when(ms) {
  if (ms === null || ms === undefined) return "none";
  const zone = zoneOf(current);
  return zone
    ? new Date(ms).toLocaleString(undefined, { timeZone: zone }) + " (" + zone + ")"
    : new Date(ms).toLocaleString();
}

async function call(path, body) {
  const token = sessionStorage.getItem(KEY);
  if (!token) throw new Error("Sign in first.");
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
    credentials: "omit",
    cache: "no-store",
  });
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    if (resp.status === 401) signOut();
    const where = data && data.field ? " (" + data.field + ")" : "";
    throw new Error((data && data.error ? data.error : "HTTP " + resp.status) + where);
  }
  return data;
}

function show(task) {
  current = task;
  $("task").hidden = !task;
  $("renew").hidden = !task;
  $("callback-form").hidden = true;
  if (!task) {
    stopHeartbeat();
    return;
  }
  startHeartbeat();
  const zone = zoneOf(task);
  $("callback-zone").textContent = zone ? "in " + zone + " time" : "in this browser's time";
  $("task-id").textContent = String(task.id);
  $("task-msisdn").textContent = task.msisdn || "unknown";
  $("task-held").textContent = when(task.held_until);
  $("task-deadline").textContent = when(task.deadline);
  $("task-script").textContent = task.script;
  // The subscriber's details the catalogue shows to agents, as text.
  const details = $("task-details");
  details.replaceChildren();
  for (const d of task.details || []) {
    const dt = document.createElement("dt");
    dt.textContent = d.name.replace(/_/g, " ");
    const dd = document.createElement("dd");
    dd.id = "detail-" + d.name;
    dd.textContent = d.unit ? d.value + " " + d.unit : d.value;
    details.append(dt, dd);
  }
  const box = $("outcomes");
  box.replaceChildren();
  for (const o of task.outcomes) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "outcome";
    b.id = "outcome-" + o;
    b.textContent = o.replace(/_/g, " ");
    b.addEventListener("click", () => outcome(o));
    box.appendChild(b);
  }
}

async function next() {
  showError("");
  try {
    const task = await call("/tasks/next");
    show(task);
    status(task ? "Task " + task.id + " is yours until " + when(task.held_until) + "." : "No task in the queue now.");
  } catch (e) {
    showError(e.message);
  }
}

async function outcome(o) {
  if (!current) return;
  if (o === "call_back_later") {
    $("callback-form").hidden = false;
    $("callback-at").focus();
    return;
  }
  showError("");
  try {
    const r = await call("/tasks/" + current.id + "/outcome", { outcome: o });
    show(null);
    status("Task " + r.id + " recorded: " + r.outcome + ".");
  } catch (e) {
    showError(e.message);
  }
}

async function callBack(ev) {
  ev.preventDefault();
  if (!current) return;
  showError("");
  const local = $("callback-at").value;
  const zone = zoneOf(current);
  let at = null;
  if (local && zone) {
    at = zonedRfc3339(local, zone);
  } else if (local) {
    const d = new Date(local);
    at = isNaN(d.getTime()) ? null : d.toISOString();
  }
  if (!at) {
    showError("Pick the time agreed with the subscriber.");
    return;
  }
  try {
    const r = await call("/tasks/" + current.id + "/outcome", {
      outcome: "call_back_later",
      call_back_at: at,
    });
    // Said in the team's zone, before the task (and its zone) leaves the page.
    const said = "Task " + r.id + " goes back to the queue for " + when(r.callback_at) + ".";
    show(null);
    status(said);
  } catch (e) {
    showError(e.message);
  }
}

// `auto`: the heartbeat's renewal. One that fails (the hold ran out, another agent took the
// task, the task was closed) stops the heartbeat and says the task may be lost; *Keep
// holding* tries again and, if it holds, restarts it.
async function renew(auto) {
  if (!current) return;
  const task = current;
  if (!auto) showError("");
  try {
    const r = await call("/tasks/" + task.id + "/hold");
    if (current !== task) return;
    current.held_until = r.held_until;
    $("task-held").textContent = when(r.held_until);
    status("Task " + r.id + " is yours until " + when(r.held_until) + ".");
    if (!auto) startHeartbeat();
  } catch (e) {
    if (current !== task) return;
    stopHeartbeat();
    showError("Task " + task.id + " could not be kept, it may be lost: " + e.message);
  }
}

function signedIn() {
  const yes = !!sessionStorage.getItem(KEY);
  $("login").hidden = yes;
  $("work").hidden = !yes;
}

function signOut() {
  sessionStorage.removeItem(KEY);
  show(null);
  signedIn();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    $("token").value = "";
    if (t) sessionStorage.setItem(KEY, t);
    signedIn();
    status("Signed in. Take the next task when you are ready.");
  });
  $("next").addEventListener("click", next);
  $("renew").addEventListener("click", () => renew(false));
  $("signout").addEventListener("click", signOut);
  $("callback-form").addEventListener("submit", callBack);
  signedIn();
  stopHeartbeat();
  document.body.dataset.ready = "1";
});
