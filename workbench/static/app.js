// Workbench: small progressive enhancements; every page also works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Open a <dialog> instead of following the link to the confirmation page.
  document.querySelectorAll("[data-dialog]").forEach(function (el) {
    var dialog = document.getElementById(el.getAttribute("data-dialog"));
    if (!dialog || typeof dialog.showModal !== "function") return;
    el.addEventListener("click", function (ev) {
      ev.preventDefault();
      dialog.showModal();
      // the safe choice first: Enter must never delete at once
      var safe = dialog.querySelector("[data-close]") || dialog.querySelector("input, button");
      if (safe) safe.focus();
    });
  });
  document.querySelectorAll("dialog [data-close]").forEach(function (btn) {
    btn.addEventListener("click", function () { btn.closest("dialog").close(); });
  });
  // "I understand" checkboxes enable their button.
  document.querySelectorAll("[data-enables]").forEach(function (box) {
    var target = document.getElementById(box.getAttribute("data-enables"));
    if (!target) return;
    var sync = function () { target.disabled = !box.checked; };
    box.addEventListener("change", sync);
    sync();
  });
  // Selects that apply themselves.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });
  // Key/value rows of generic credentials.
  document.querySelectorAll("[data-kv]").forEach(function (box) {
    var rows = box.querySelector(".kv-rows");
    box.addEventListener("click", function (ev) {
      var t = ev.target;
      if (t.hasAttribute("data-kv-add")) {
        var row = rows.querySelector(".kv-row").cloneNode(true);
        row.querySelectorAll("input").forEach(function (i) { i.value = ""; });
        rows.appendChild(row);
        row.querySelector("input").focus();
      } else if (t.hasAttribute("data-kv-remove")) {
        var all = rows.querySelectorAll(".kv-row");
        var mine = t.closest(".kv-row");
        if (all.length > 1) { mine.remove(); }
        else { mine.querySelectorAll("input").forEach(function (i) { i.value = ""; }); }
      }
    });
  });
  // A page waiting on a check or a sync (data-poll="seconds") asks for itself in the
  // background and reloads once, when the answer no longer waits: not a timed <meta refresh>,
  // which reloads under a reader's cursor every few seconds (WCAG 2.2.1; axe: meta-refresh).
  var poll = document.querySelector("[data-poll]");
  if (poll && window.fetch) {
    var every = (parseFloat(poll.getAttribute("data-poll")) || 3) * 1000;
    var ask = function () {
      fetch(location.href, {credentials: "same-origin", cache: "no-store"})
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          if (html.indexOf("data-poll=") === -1) location.reload();
          else setTimeout(ask, every);
        })
        .catch(function () { setTimeout(ask, every * 2); });
    };
    setTimeout(ask, every);
  }
  // After a rejected form, focus goes to the summary of its errors.
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
  // Per-row action menus (<details>): one open at a time; Escape closes and returns focus.
  var menus = document.querySelectorAll("details.menu");
  menus.forEach(function (menu) {
    menu.addEventListener("toggle", function () {
      if (!menu.open) return;
      menus.forEach(function (other) { if (other !== menu) other.open = false; });
    });
    menu.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && menu.open) {
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
  });
  document.addEventListener("click", function (ev) {
    menus.forEach(function (menu) { if (menu.open && !menu.contains(ev.target)) menu.open = false; });
  });
  // Copy a shown-once token.
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var input = document.getElementById(btn.getAttribute("data-copy"));
      input.select();
      if (navigator.clipboard) navigator.clipboard.writeText(input.value);
      btn.textContent = "Copied";
    });
  });
});
