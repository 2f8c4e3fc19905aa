"""Server-side SVG charts for the reports (pygal), safe offline and under our CSP.

pygal links its tooltip script from a CDN by default: ``js=[]`` drops that, and the
inline config <script> it still writes is removed, so the SVG needs no network and runs
no code. The SVG is served as an image (``<img src>``) from its own route.
"""

from __future__ import annotations

import math
import re
from datetime import date

import pygal
from pygal.style import Style

_SCRIPT = re.compile(rb"<script\b.*?</script>", re.DOTALL)

STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#344054",
    foreground_strong="#1f3a5f",
    foreground_subtle="#98a2b3",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    value_font_size=12,
    value_label_font_size=12,
    title_font_size=15,
    legend_font_size=12,
    colors=("#2f6db5", "#198754", "#d9480f", "#6f42c1"),
    opacity=".9",
    opacity_hover=".9",
)


def _config(**extra) -> dict:
    return {
        "js": [],  # no CDN script (CSP, offline)
        "style": STYLE,
        "disable_xml_declaration": False,
        "show_legend": False,
        "margin": 16,
        # width/height on the <svg>: its natural size, which the page does not stretch past
        # (img.w-auto.mw-100), so a chart never grows beyond its design size and font sizes.
        "explicit_size": True,
        **extra,
    }


def whole_ticks(top: int) -> list[int]:
    """Value-axis labels for a count: whole numbers in steps of 1, 2, 5, 10, 20 …, ten at most,
    from 0 to the first step at or past ``top``.
    Left to itself pygal labels a quiet range 0, 0.2, 0.4 … leads (and an empty one 0.1 …)."""
    top = max(int(top), 1)
    rough = top / 10
    magnitude = 10 ** max(0, math.floor(math.log10(rough))) if rough >= 1 else 1
    step = next(k * magnitude for k in (1, 2, 5, 10) if k * magnitude >= rough)  # 1, 2, 5, 10, 20, 50 …
    return list(range(0, top + step, step))


def _render(chart) -> bytes:
    return _SCRIPT.sub(b"", chart.render())


def leads_per_day_svg(per_day: list[tuple[date, int]]) -> bytes:
    n = len(per_day)
    step = max(1, n // 12)  # about a dozen readable date labels whatever the range
    chart = pygal.Bar(
        **_config(
            width=900,
            height=320,
            x_title="Day (desk time zone)",
            y_title="New leads",
            x_label_rotation=-35 if n > 14 else 0,
            show_minor_x_labels=False,
            print_values=n <= 31,
            min_scale=2,
        )
    )
    chart.x_labels = [d.strftime("%b %-d") for d, _ in per_day]
    chart.x_labels_major = [d.strftime("%b %-d") for k, (d, _) in enumerate(per_day) if k % step == 0]
    chart.add("New leads", [v for _, v in per_day])
    chart.y_labels = whole_ticks(max((v for _, v in per_day), default=0))
    return _render(chart)


def funnel_svg(stages: list[dict]) -> bytes:
    chart = pygal.HorizontalBar(
        **_config(
            width=520,
            height=250,
            x_title="Leads",
            print_values=True,
            print_values_position="top",
        )
    )
    # HorizontalBar draws the first label at the bottom: reverse so "new" reads first.
    rows = list(reversed(stages))
    chart.x_labels = [_stage_label(r) for r in rows]
    chart.add("Leads", [r["leads"] for r in rows])
    chart.y_labels = whole_ticks(max((r["leads"] for r in rows), default=0))  # the value axis, drawn across
    return _render(chart)


def _stage_label(row: dict) -> str:
    name = row["stage"].capitalize()
    return name if row["from_new_pct"] is None else f"{name} ({row['from_new_pct']:g}%)"
