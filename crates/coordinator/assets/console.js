// cronfleet console: the few things a server-rendered page cannot do alone.
// - the job form's schedule preview, fetched as the schedule is typed;
// - a running run's output, streamed by server-sent events (the same stream as
//   `cronfleet run logs --follow`), and the page refreshed when the run ends;
// - "select all" for the job list's bulk actions;
// - only the fields of the chosen schedule kind shown.
// Every page works without it.
"use strict";

function schedulePreview(form) {
  const target = () => document.getElementById("preview");
  let timer = null;
  let asked = 0;
  const refresh = () => {
    const fields = ["kind", "every", "start", "cron", "at", "tz"];
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const name of fields) query.set(name, data.get(name) || "");
    const mine = ++asked;
    fetch(form.dataset.preview + "?" + query.toString(), { credentials: "same-origin" })
      .then((response) => response.text())
      .then((html) => {
        if (mine !== asked || !target()) return;
        target().outerHTML = html;
      })
      .catch(() => {});
  };
  form.addEventListener("input", (event) => {
    if (!["kind", "every", "start", "cron", "at", "tz"].includes(event.target.name)) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  });
}

function scheduleKinds(form) {
  const show = () => {
    const checked = form.querySelector('input[name="kind"]:checked');
    const kind = checked ? checked.value : "every";
    for (const field of form.querySelectorAll("[data-kind]")) {
      field.hidden = field.dataset.kind !== kind;
    }
  };
  form.addEventListener("change", (event) => {
    if (event.target.name === "kind") show();
  });
  show();
}

function followOutput(pre) {
  const source = new EventSource(pre.dataset.events);
  let first = true;
  source.addEventListener("output", (event) => {
    // The first event is the whole kept log: it replaces what the page was rendered with.
    if (first) { pre.textContent = ""; first = false; }
    pre.textContent += event.data;
    pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", () => {
    source.close();
    window.location.reload();
  });
  source.addEventListener("failure", (event) => {
    source.close();
    pre.textContent += "\n[" + event.data + "]\n";
  });
}

function selectAll(box) {
  box.addEventListener("change", () => {
    for (const other of document.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]')) {
      other.checked = box.checked;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-preview]")) {
    schedulePreview(form);
    scheduleKinds(form);
  }
  for (const pre of document.querySelectorAll("pre[data-events]")) followOutput(pre);
  for (const box of document.querySelectorAll("input[data-select-all]")) selectAll(box);
});
