"""Charts drawn on the server as inline SVG (no JavaScript, no library):
stacked bars, one per time slot, one colour per outcome."""

from __future__ import annotations

from markupsafe import Markup, escape

BAR_MAX = 36    # px: the widest bar (a window of few slots)
COLOURS = {"completed": "#2f9e44", "failed": "#e03131", "cancelled": "#868e96",
           "compensated": "#7048e8"}


def stacked_bars(testid: str, title: str, labels: list[str],
                 series: dict[str, list[int]], capped: bool = False,
                 unit: str = "runs", width: int = 760) -> Markup:
    """One bar per label, stacked by series; a tooltip (<title>) per bar.
    Every slot is drawn (an empty one as a faint column), bars are at most
    BAR_MAX wide (a single slot is not one solid block), the y axis says
    its unit; width: the drawing's own (its text stays readable when it
    fills a wide card)."""
    w, h, left, bottom, top = width, 190, 44, 22, 24
    n = max(len(labels), 1)
    slot = (w - left - 4) / n
    bar = min(max(slot - 2, 1), BAR_MAX)
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    peak = max(totals + [1])
    scale = (h - bottom - top) / peak
    out = [f'<svg data-testid="{escape(testid)}" class="chart" role="img" '
           f'viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMinYMin meet" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    base_y = h - bottom
    for frac in (0, 0.5, 1):
        y = base_y - frac * peak * scale
        out.append(f'<line x1="{left}" x2="{w - 2}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
                   f'{int(round(frac * peak)):,}</text>')
    out.append(f'<text x="2" y="10" class="axis">{escape(unit)}</text>')
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar) / 2
        y = base_y
        parts = ", ".join(f"{k} {s[i]:,}" for k, s in series.items())
        out.append(f'<g><title>{escape(label)}: {escape(parts)}'
                   f'{" (each count capped)" if capped else ""}</title>'
                   f'<rect x="{x:.1f}" y="{top}" width="{bar:.1f}" height="{base_y - top}" '
                   f'class="slot"/>')
        for name, s in series.items():
            bh = s[i] * scale
            if bh <= 0:
                continue
            y -= bh
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                       f'height="{bh:.1f}" fill="{COLOURS.get(name, "#1c7ed6")}"/>')
        out.append("</g>")
    step = max(1, n // 6)
    for i in range((len(labels) - 1) % step, len(labels), step):   # the last slot labelled
        last = i == len(labels) - 1       # right-aligned: not cut at the edge
        x = left + (i + 1) * slot if last else left + i * slot + slot / 2
        out.append(f'<text x="{x:.1f}" y="{h - 6}" text-anchor="{"end" if last else "middle"}" '
                   f'class="axis">{escape(labels[i])}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def legend(names: list[str]) -> Markup:
    items = "".join(f'<span class="key"><i class="c-{escape(n)}"></i>{escape(n)}</span>'
                    for n in names)
    return Markup(f'<div class="legend">{items}</div>')
