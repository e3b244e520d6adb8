// The look-up page: calls the JSON API of the same server (POST /v1/recommend and the
// dashboard's /ui/api/*) and renders the answer. Every value from the server is put in
// the page with textContent, never as HTML, because titles come from user data.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    throw new Error(`${path}: HTTP ${response.status} with a body that is not JSON`);
  }
  if (!response.ok) {
    throw new Error(data && data.message ? data.message : `${path}: HTTP ${response.status}`);
  }
  return data;
}

let segmentProfiles = {};

function showError(id, message) {
  const box = $(id);
  box.textContent = message;
  box.hidden = !message;
}

function fact(label, value, field) {
  return el("span", { "data-field": field }, `${label} `, el("b", { text: value === null ? "none" : String(value) }));
}

function renderResult(box, out) {
  box.replaceChildren();
  const facts = el("div", { class: "facts" },
    fact("user", out.user_id === null ? "(new)" : out.user_id, "user"),
    fact("segment", out.segment, "segment"),
    fact("tier", out.tier, "tier"),
    fact("routed tier", out.routed_tier, "routed-tier"));
  if (out.new_user) facts.append(el("span", { class: "flag", "data-field": "new-user", text: "new user" }));
  if (out.fallback) facts.append(el("span", { class: "flag", "data-field": "fallback", text: "fallback" }));
  if (out.segment_confidence !== null && out.segment_confidence !== undefined) {
    facts.append(fact("confidence", out.segment_confidence.toFixed(2), "confidence"));
  }
  if (out.evidence) facts.append(fact("placed by", out.evidence, "evidence"));
  box.append(facts);
  if (out.reason) box.append(el("p", { class: "note", "data-field": "reason", text: out.reason }));
  const profile = segmentProfiles[out.segment];
  if (profile) {
    const cats = (profile.top_categories || []).map((c) => c.category).slice(0, 3).join(", ");
    const text = `segment ${profile.segment}: ${profile.users} users, median ${profile.median_history} ` +
      `interactions${cats ? "; most-interacted categories: " + cats : ""}`;
    box.append(el("p", { class: "profile", text }));
  }
  const body = el("tbody");
  out.items.forEach((item, i) => {
    body.append(el("tr", {},
      el("td", { class: "num", text: String(i + 1) }),
      el("td", { text: item.title === null ? "" : item.title }),
      el("td", { text: item.item_id }),
      el("td", { class: "num", text: Number(item.score).toFixed(4) })));
  });
  const head = el("thead", {}, el("tr", {},
    el("th", { class: "num", text: "#" }), el("th", { text: "title" }), el("th", { text: "item id" }),
    el("th", { class: "num", text: "score" })));
  box.append(el("table", { class: "data recs" }, head, body));
  box.hidden = false;
}

function kOf(id) {
  const k = parseInt($(id).value, 10);
  return Number.isFinite(k) && k > 0 ? k : 10;
}

function parseAttributes(text) {
  const attrs = {};
  for (const part of text.split(",")) {
    const [key, ...rest] = part.split("=");
    if (!key.trim() || rest.length === 0) continue;
    const raw = rest.join("=").trim();
    const num = Number(raw);
    attrs[key.trim()] = raw !== "" && Number.isFinite(num) ? num : raw;
  }
  return attrs;
}

async function lookupKnown(event) {
  event.preventDefault();
  const button = $("#known-submit");
  button.disabled = true;
  showError("#known-error", "");
  try {
    const out = await api("/v1/recommend", { user_id: $("#user-id").value.trim(), k: kOf("#known-k") });
    renderResult($("#known-result"), out);
  } catch (err) {
    showError("#known-error", err.message);
  } finally {
    button.disabled = false;
  }
}

async function lookupNew(event) {
  event.preventDefault();
  const button = $("#new-submit");
  button.disabled = true;
  showError("#new-error", "");
  try {
    const queries = $("#new-items").value.split(/[\n,]/).map((q) => q.trim()).filter(Boolean);
    const resolved = await api("/ui/api/resolve", { queries });
    const box = $("#new-resolved");
    box.replaceChildren(el("span", { text: "Matched: " }));
    resolved.items.forEach((item, i) => {
      const label = item.title ? `${item.title} (${item.item_id})` : item.item_id;
      box.append(el("span", { class: "matched", text: (i ? "; " : "") + label }));
    });
    if (!resolved.items.length) box.append(el("span", { text: "nothing" }));
    if (resolved.unresolved.length) {
      box.append(el("span", { class: "miss", text: ` — not found: ${resolved.unresolved.join("; ")}` }));
    }
    box.hidden = false;
    const out = await api("/v1/recommend", {
      recent_items: resolved.items.map((item) => item.item_id),
      attributes: parseAttributes($("#new-attrs").value),
      k: kOf("#new-k"),
    });
    renderResult($("#new-result"), out);
  } catch (err) {
    showError("#new-error", err.message);
  } finally {
    button.disabled = false;
  }
}

let searchTimer = null;

function searchItems() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    try {
      const q = encodeURIComponent($("#item-search").value.trim());
      const found = await api(`/ui/api/items?q=${q}&limit=15`);
      $("#item-options").replaceChildren(...found.items.map((item) =>
        el("option", { value: item.title || item.item_id, label: item.item_id })));
    } catch (err) {
      showError("#new-error", err.message);
    }
  }, 150);
}

function addItem() {
  const value = $("#item-search").value.trim();
  if (!value) return;
  const area = $("#new-items");
  area.value = area.value.trim() ? `${area.value.trim()}\n${value}` : value;
  $("#item-search").value = "";
}

async function loadExamples() {
  try {
    const [examples, segments] = await Promise.all([api("/ui/api/examples"), api("/v1/segments")]);
    for (const profile of segments.segments) segmentProfiles[profile.segment] = profile;
    $("#user-examples").replaceChildren(...examples.users.map((u) =>
      el("option", { value: u.user_id, label: `segment ${u.segment} · ${u.tier}` })));
    const hints = $("#user-hints");
    hints.replaceChildren(el("span", { text: "Try: " }));
    const seen = new Set();
    for (const u of examples.users) {
      if (seen.has(u.segment)) continue; // one example per segment
      seen.add(u.segment);
      const link = el("button", { type: "button", class: "hint", text: `${u.user_id} (segment ${u.segment})` });
      link.addEventListener("click", () => {
        $("#user-id").value = u.user_id;
        $("#known-form").requestSubmit(); // a "Try:" link shows the answer, not just a filled box
      });
      hints.append(link);
    }
    $("#item-options").replaceChildren(...examples.items.map((item) =>
      el("option", { value: item.title || item.item_id, label: item.item_id })));
    $("#served").textContent = `Serving ${examples.system || "a system"}` +
      (examples.policy ? ` (policy ${examples.policy})` : "") +
      `: ${examples.n_users.toLocaleString()} known users, ${examples.n_items.toLocaleString()} items.`;
  } catch (err) {
    showError("#known-error", `Could not load examples: ${err.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#known-form").addEventListener("submit", lookupKnown);
  $("#new-form").addEventListener("submit", lookupNew);
  $("#item-search").addEventListener("input", searchItems);
  $("#item-add").addEventListener("click", addItem);
  loadExamples();
});
