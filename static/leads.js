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

  // Follow-up form: the typed due time read in both zones before saving (SPEC 7), e.g.
  // "Patient: Thu Dec 03, 10:00 AM EST · You: Thu Dec 03, 07:00 AM PST". The server still decides.
  function zoneOffsetMinutes(utcMillis, tz) {
    var parts = {};
    new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit"
    }).formatToParts(new Date(utcMillis)).forEach(function (p) { parts[p.type] = p.value; });
    var asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour % 24, +parts.minute, +parts.second);
    return (asUtc - utcMillis) / 60000;
  }
  function wallTimeIn(value, tz) {  // "2026-12-03T10:00" in tz -> a Date
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value);
    if (!m) { return null; }
    var naive = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
    var guess = naive - zoneOffsetMinutes(naive, tz) * 60000;
    return new Date(naive - zoneOffsetMinutes(guess, tz) * 60000);  // twice: right across a clock change
  }
  function showDuePreview(input) {
    var out = document.getElementById(input.getAttribute("data-preview-out"));
    var basis = document.getElementById(input.getAttribute("data-basis"));
    if (!out) { return; }
    var patientTz = input.getAttribute("data-preview-tz"), myTz = input.getAttribute("data-my-tz");
    try {
      var when = wallTimeIn(input.value, basis && basis.value === "mine" ? myTz : patientTz);
      if (!when || isNaN(when.getTime())) { out.textContent = ""; return; }
      var fmt = function (tz) {
        return new Intl.DateTimeFormat("en-US", {
          timeZone: tz, weekday: "short", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit",
          timeZoneName: "short"
        }).format(when);
      };
      out.textContent = "Patient: " + fmt(patientTz) + " · You: " + fmt(myTz);
    } catch (e) { out.textContent = ""; }
  }
  document.querySelectorAll("input[data-preview-out]").forEach(function (input) {
    var basis = document.getElementById(input.getAttribute("data-basis"));
    input.addEventListener("input", function () { showDuePreview(input); });
    if (basis) { basis.addEventListener("change", function () { showDuePreview(input); }); }
    showDuePreview(input);
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
