// Queue and lead workspace: live patient clock, "?" help button, j/k row navigation.
// Loaded by templates/leads/*.html only; no inline scripts (CSP).
(function () {
  "use strict";

  // Patient's local clock: <span data-local-clock data-tz="America/Phoenix">.
  function tick() {
    document.querySelectorAll("[data-local-clock]").forEach(function (el) {
      try {
        el.textContent = new Intl.DateTimeFormat("en-US", {
          weekday: "short", hour: "2-digit", minute: "2-digit", timeZone: el.getAttribute("data-tz"), timeZoneName: "short"
        }).format(new Date());
      } catch (e) { /* unknown zone: keep the server's text */ }
    });
  }
  if (document.querySelector("[data-local-clock]")) { tick(); window.setInterval(tick, 30000); }

  // Booking: the Visit field follows the chosen physician's line ("— telehealth" books telehealth).
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-sets-mode]");
    if (!select || !select.selectedOptions.length) { return; }
    var mode = select.selectedOptions[0].getAttribute("data-mode");
    var target = document.getElementById(select.getAttribute("data-sets-mode"));
    if (mode && target) { target.value = mode; }
  });

  // Ctrl+Enter (Cmd+Enter on a Mac) in a workspace text box sends its form, as in mail and chat.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) { return; }
    var box = event.target.closest("textarea");
    var form = box && box.closest("form[method=post]");
    if (!form) { return; }
    event.preventDefault();
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  });

  // Queue on a phone: "More filters" unfolds the filters beside the search.
  document.addEventListener("click", function (event) {
    var btn = event.target.closest("[data-more-filters]");
    if (!btn) { return; }
    var form = btn.closest("form");
    form.classList.toggle("show-more");
    btn.setAttribute("aria-expanded", String(form.classList.contains("show-more")));
  });

  // The "?" button toggles the same help panel as the "?" key.
  document.addEventListener("click", function (event) {
    var btn = event.target.closest("[data-toggle-help]");
    if (!btn) { return; }
    var help = document.getElementById("shortcut-help");
    if (help) { help.classList.toggle("d-none"); btn.setAttribute("aria-expanded", String(!help.classList.contains("d-none"))); }
  });

  // j / k move a highlight through the queue rows, Enter opens the highlighted lead.
  var table = document.querySelector("[data-row-nav]");
  if (table) {
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr")).filter(function (r) { return r.querySelector("a.lead-link"); });
    var current = -1;
    var select = function (i) {
      if (!rows.length) { return; }
      if (current >= 0) { rows[current].classList.remove("row-selected"); }
      current = Math.max(0, Math.min(rows.length - 1, i));
      rows[current].classList.add("row-selected");
      rows[current].scrollIntoView({ block: "nearest" });
    };
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      if (event.target.closest("input, textarea, select, [contenteditable=true]")) { return; }
      if (event.key === "j") { select(current + 1); event.preventDefault(); }
      else if (event.key === "k") { select(current - 1); event.preventDefault(); }
      else if (event.key === "Enter" && current >= 0) { rows[current].querySelector("a.lead-link").click(); event.preventDefault(); }
    });
  }
})();
