// Appointment Desk: small progressive enhancements. No inline scripts (CSP).
(function () {
  "use strict";

  // Buttons with data-confirm ask before submitting their form; so does a chosen <option> with one
  // (a status or outcome that cannot be taken back).
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var chosen = event.target.querySelector("option[data-confirm]:checked");
    var message = (button && button.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm") ||
      (chosen && chosen.getAttribute("data-confirm"));
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

  // Success messages step aside after a while (they stay pinned in view on staff pages);
  // warnings and errors wait to be closed.
  window.setTimeout(function () {
    document.querySelectorAll(".staff .flash-stack .alert-success").forEach(function (alert) { alert.remove(); });
  }, 8000);

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
    // A field, or a card that can take the focus (tabindex="-1"): go there; anything else is pressed.
    if (el.matches("input, textarea, select, [tabindex='-1']")) { el.focus(); } else { el.click(); }
  });
  // "Add a row" under a table of numbered form rows (name="registrations-3-state"): a copy of the
  // last row, emptied and numbered next, so a physician licensed in eight states is one save.
  document.addEventListener("click", function (event) {
    var btn = event.target.closest("[data-add-row]");
    if (!btn) { return; }
    var table = document.getElementById(btn.getAttribute("data-add-row"));
    var rows = table ? table.tBodies[0].rows : [];
    if (!rows.length) { return; }
    var last = rows[rows.length - 1];
    var field = last.querySelector("[name]");
    var match = field && field.name.match(/^(.*?)-(\d+)-/);
    if (!match) { return; }
    var next = parseInt(match[2], 10) + 1;
    var copy = last.cloneNode(true);
    copy.className = "";
    copy.querySelectorAll("[name], [id]").forEach(function (el) {
      ["name", "id"].forEach(function (attr) {
        var value = el.getAttribute(attr);
        if (value) { el.setAttribute(attr, value.replace(match[1] + "-" + match[2] + "-", match[1] + "-" + next + "-")); }
      });
      if (el.type === "checkbox") { el.checked = false; } else if ("value" in el && el.tagName !== "BUTTON") { el.value = ""; }
    });
    copy.querySelectorAll(".badge, .text-danger, .form-check").forEach(function (el) { el.remove(); });
    last.parentNode.appendChild(copy);
    var first = copy.querySelector("select, input");
    if (first) { first.focus(); }
  });

  // Automatic sign-out (SPEC 12) as a specialist sees it. The server signs a session out after
  // IDLE_TIMEOUT without a request; typing a long note or reading a lead makes none, so activity
  // in the page is reported (at most every minute or so) and counts. A minute before the limit a
  // banner offers to stay signed in; at the limit the page is left for the sign-in page, so
  // patient details do not stay on an unattended screen. Open tabs share the last report
  // through localStorage (a timestamp only).
  var body = document.body;
  var idleMs = parseInt(body.getAttribute("data-idle-seconds") || "0", 10) * 1000;
  var keepaliveUrl = body.getAttribute("data-keepalive-url");
  if (idleMs > 0 && keepaliveUrl) {
    var SHARED_KEY = "desk-last-server-contact";
    var reportEvery = Math.min(60000, idleMs / 3);
    var warnAhead = Math.min(60000, idleMs / 4);
    var lastActivity = 0;
    var reporting = false;
    var banner = null;
    var leaving = false;
    var pageContact = 0;

    var lastContact = function () {
      var shared = 0;
      try { shared = parseInt(window.localStorage.getItem(SHARED_KEY) || "0", 10) || 0; } catch (e) { /* storage off */ }
      return Math.max(shared, pageContact);
    };
    var noteContact = function (when) {
      pageContact = Math.max(pageContact, when);
      try { window.localStorage.setItem(SHARED_KEY, String(lastContact())); } catch (e) { /* storage off: this tab only */ }
    };
    noteContact(Date.now());  // this page's own request

    var leave = function () {
      // A plain GET of this page (or, for a page re-shown after a failed post, of the page the
      // form was on): the server signs the session out and sends the sign-in page, which
      // brings the user back there afterwards.
      if (leaving) { return; }
      leaving = true;
      window.location.assign(body.getAttribute("data-return-url") || "/");
    };

    var retryAfter = 0;
    var report = function () {
      if (reporting || Date.now() < retryAfter) { return; }
      reporting = true;
      var started = Date.now();
      fetch(keepaliveUrl, {
        method: "POST",
        credentials: "same-origin",
        redirect: "manual",
        headers: { "X-CSRFToken": body.getAttribute("data-csrf-token"), "Accept": "application/json" }
      }).then(function (resp) {
        if (resp.status === 204) {
          noteContact(started);
          hideBanner();
        } else if (resp.status === 401 || resp.type === "opaqueredirect") {
          leave();  // the session is over: nothing typed here could be saved any more
        } else {
          retryAfter = Date.now() + 15000;  // a deploy or a hiccup: keep the page, try again soon
        }
      }).catch(function () {
        retryAfter = Date.now() + 15000;  // offline for a moment
      }).then(function () { reporting = false; });
    };

    // Text typed into a form and not sent yet: the sign-out cannot keep it (nothing about a patient
    // is stored in the browser), so the warning says what is at stake.
    var unsavedTyping = function () {
      return Array.prototype.some.call(document.querySelectorAll("form[method=post] textarea, form[method=post] input[type=text]"), function (el) {
        return el.value.trim() !== "" && el.value !== el.defaultValue;
      });
    };

    var hideBanner = function () {
      if (banner) { banner.remove(); banner = null; }
    };
    var showBanner = function (seconds) {
      if (!banner) {
        banner = document.createElement("div");
        banner.className = "alert alert-warning idle-warning shadow";
        banner.setAttribute("role", "alertdialog");
        banner.setAttribute("aria-live", "assertive");
        var text = document.createElement("span");
        var button = document.createElement("button");
        button.type = "button";
        button.className = "btn btn-sm btn-warning ms-2";
        button.textContent = "Stay signed in";
        button.addEventListener("click", report);
        banner.appendChild(text);
        banner.appendChild(button);
        document.body.appendChild(banner);
        button.focus();
      }
      banner.firstChild.textContent = "You will be signed out in " + seconds + " s for inactivity" +
        (unsavedTyping() ? ", and what you typed and have not saved will be lost." : ".");
    };

    var activity = function () {
      lastActivity = Date.now();
      if (lastActivity - lastContact() >= reportEvery) { report(); }
    };
    ["keydown", "input", "pointerdown", "wheel", "touchstart"].forEach(function (name) {
      document.addEventListener(name, activity, { passive: true, capture: true });
    });

    window.setInterval(function () {
      var contact = lastContact();
      if (lastActivity > contact && Date.now() - contact >= reportEvery) { report(); return; }
      var left = idleMs - (Date.now() - contact);
      if (left <= 0) { leave(); } else if (left <= warnAhead) { showBanner(Math.ceil(left / 1000)); } else { hideBanner(); }
    }, 1000);
  }
})();
