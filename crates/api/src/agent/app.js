// The agents' page: takes the next task, shows its script, the subscriber's masked
// number and the details the catalogue shows to agents, records an outcome or a call back. Every call carries the agent's token from
// sessionStorage (never the URL); everything shown is set as text, never as HTML.
"use strict";

const KEY = "campaignd-agent-token";
let current = null;

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
  return new Date(ms).toLocaleString();
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
  if (!task) return;
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
  const at = new Date(local);
  if (!local || isNaN(at.getTime())) {
    showError("Pick the time agreed with the subscriber.");
    return;
  }
  try {
    const r = await call("/tasks/" + current.id + "/outcome", {
      outcome: "call_back_later",
      call_back_at: at.toISOString(),
    });
    show(null);
    status("Task " + r.id + " goes back to the queue for " + when(r.callback_at) + ".");
  } catch (e) {
    showError(e.message);
  }
}

async function renew() {
  if (!current) return;
  showError("");
  try {
    const r = await call("/tasks/" + current.id + "/hold");
    current.held_until = r.held_until;
    $("task-held").textContent = when(r.held_until);
    status("Task " + r.id + " is yours until " + when(r.held_until) + ".");
  } catch (e) {
    showError(e.message);
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
  $("renew").addEventListener("click", renew);
  $("signout").addEventListener("click", signOut);
  $("callback-form").addEventListener("submit", callBack);
  signedIn();
  document.body.dataset.ready = "1";
});
