"""Playwright in Debian's Chromium: the public pages as a patient sees them, at desktop and phone widths."""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer
from tests.factories import ConditionFactory

pytestmark = pytest.mark.browser

WIDTHS = [(1280, 800), (1024, 768), (390, 844)]

# Each option of the form's selects that would not fit its select's text box when chosen.
CUT_OPTIONS = """() => {
  const cut = [];
  for (const select of document.querySelectorAll("form select")) {
    const style = getComputedStyle(select);
    const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const probe = document.createElement("span");
    probe.style.cssText = "position:absolute;visibility:hidden;white-space:pre";
    probe.style.font = style.font;
    document.body.appendChild(probe);
    for (const option of select.options) {
      probe.textContent = option.text;
      if (probe.getBoundingClientRect().width > room) { cut.push(select.id + ": " + option.text); }
    }
    probe.remove();
  }
  return cut;
}"""

# Visible text below WCAG AA contrast against its solid background: 4.5:1, or 3:1 when large.
LOW_CONTRAST = """() => {
  const rgba = (c) => { const v = c.match(/[\\d.]+/g).map(Number); return v.length > 3 ? v : [...v, 1]; };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3])).concat(1);
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.backgroundImage !== "none" && !e.matches("html, body")) { return null; }  // a gradient: not judged here
      const c = rgba(s.backgroundColor);
      if (c[3] > 0) { layers.push(c); }
      if (c[3] >= 1) { break; }
    }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || el.closest(".hp-field, option, .visually-hidden")) { continue; }
    if (!el.getClientRects().length) { continue; }
    const s = getComputedStyle(el);
    const bg = background(el);
    if (!bg) { continue; }
    const fg = over(rgba(s.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(s.fontSize);
    const large = size >= 24 || (parseInt(s.fontWeight, 10) >= 700 && size >= 18.66);
    const text = walker.currentNode.textContent.trim().slice(0, 40);
    if (ratio < (large ? 3 : 4.5)) { low.push(text + " " + ratio.toFixed(2)); }
  }
  return [...new Set(low)];
}"""


@pytest.fixture
def site(make_app, db):
    ConditionFactory(name="Dystonia", slug="dystonia", summary="Involuntary muscle contractions.", body="Words.")
    ConditionFactory(name="Chronic pain", slug="chronic-pain", summary="Pain lasting longer than three months.")
    db.session.commit()
    server = LiveServer(make_app()).start()
    yield server
    server.stop()


def test_no_option_of_the_forms_selects_is_cut_at_desktop_or_phone_widths(site, browser):
    """Beside a condition's text the form's column is narrow: three selects in one row cut
    "Phone call" to "Phone cal"; on /request "Any time (no preference)" was cut too."""
    for width, height in WIDTHS:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        for path in ("/conditions/dystonia", "/request"):
            page.goto(site.url + path)
            assert page.evaluate(CUT_OPTIONS) == [], (width, path)
        context.close()


def test_public_page_text_meets_wcag_aa_contrast(site, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    for path in ("/conditions", "/conditions/dystonia", "/request", "/thank-you", "/conditions/no-such-thing"):
        page.goto(site.url + path)
        assert page.evaluate(LOW_CONTRAST) == [], path
    # the form sent back with errors: red texts on the agreement box's tint
    page.goto(site.url + "/conditions/dystonia")
    page.get_by_role("button", name="Book Appointment").click()
    page.wait_for_selector("#consent-err")
    assert page.evaluate(LOW_CONTRAST) == []
    context.close()
