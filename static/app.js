// Appointment Desk: small progressive enhancements. No inline scripts (CSP).
(function () {
  "use strict";

  // Buttons with data-confirm ask before submitting their form.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  // A form that comes back with errors or a notice puts the keyboard focus on that message.
  // After "load": the browser's scroll to the form's #fragment would otherwise take it back.
  window.addEventListener("load", function () {
    var message = document.querySelector("[data-focus-on-load]");
    if (message) { message.focus(); }
  });

  // Auto-submit filter selects marked with data-autosubmit.
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) {
      event.target.form.submit();
    }
  });

  // Keyboard shortcuts: any element with data-shortcut="k" is clicked or focused on that key,
  // unless the user is typing in a field. "?" toggles the help panel if the page has one.
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target.closest("input, textarea, select, [contenteditable=true]")) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (event.key === "?") {
      var help = document.getElementById("shortcut-help");
      if (help) { help.classList.toggle("d-none"); event.preventDefault(); }
      return;
    }
    var el = document.querySelector('[data-shortcut="' + CSS.escape(event.key) + '"]');
    if (!el) { return; }
    event.preventDefault();
    if (el.matches("input, textarea, select")) { el.focus(); } else { el.click(); }
  });
})();
