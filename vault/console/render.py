"""HTML for the console: the page frame, numbers for people and the usage chart.

Every value from outside the code (names, labels, errors) goes through
:func:`esc`; the helpers here return markup that is already safe, which the
pages join as plain strings.
"""

from __future__ import annotations

import html
from datetime import date
from typing import Iterable

from ..policy import Principal

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def size(n: int | float | None) -> str:
    """Bytes for people: ``1.5 GiB``; ``—`` for none."""
    if n is None:
        return "—"
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def age(seconds: float | None) -> str:
    """A duration in the past for people: ``just now``, ``5 minutes ago``, ``3 days ago``."""
    if seconds is None:
        return "never"
    return "just now" if seconds < 60 else span(seconds) + " ago"


def days_ago(day: str, today: str) -> int:
    return (date.fromisoformat(today) - date.fromisoformat(day)).days


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def form(action: str, csrf: str, body: str, button: str, cls: str = "") -> str:
    """A POST form carrying the session's CSRF token."""
    return (f'<form method="post" action="{esc(action)}" class="{esc(cls)}">{hidden("csrf", csrf)}{body}'
            f'<button type="submit">{esc(button)}</button></form>')


Cell = str | tuple[str, str | int]


def _cell(cell: Cell) -> str:
    if isinstance(cell, tuple):
        markup, sort_key = cell
        return f'<td data-v="{esc(sort_key)}">{markup}</td>'
    return f"<td>{cell}</td>"


def table(head: Iterable[str], rows: Iterable[Iterable[Cell]], attrs: str = "") -> str:
    """Cells are markup (already escaped), or markup and the value a column sorts by;
    ``attrs`` go on the ``<table>``."""
    ths = "".join(f'<th scope="col">{h}</th>' for h in head)
    trs = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table {attrs}><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table></div>'


def bar(used: int, quota: int | None) -> str:
    """Stored bytes against the quota; a full vault shows as such without colour alone."""
    if not quota:
        return f"{size(used)} <span class=\"muted\">no quota</span>"
    pct = min(100.0, 100.0 * used / quota)
    return (f'<meter min="0" max="{quota}" low="{int(quota * 0.8)}" high="{int(quota * 0.9)}" optimum="0" '
            f'value="{min(used, quota)}" title="{pct:.0f}%"></meter> '
            f'{size(used)} of {size(quota)} ({pct:.0f}%)')


def chart(points: list[tuple[str, int]], label: str) -> str:
    """A line chart of byte counts by day (x by date: days without a snapshot keep their place)."""
    if len(points) < 2:
        return '<p class="muted">No history yet: a snapshot is taken every day.</p>'
    first, last = points[0], points[-1]
    top = max(v for _, v in points)
    desc = f"{label} from {first[0]} ({size(first[1])}) to {last[0]} ({size(last[1])}), peak {size(top)}"
    return line_chart([(date.fromisoformat(d).toordinal(), v) for d, v in points], desc)


def line_chart(points: list[tuple[float, float]], desc: str) -> str:
    """A line chart of ``(x, y)`` points as inline SVG (scales to its box); ``desc`` says
    in words what it shows (its caption and accessible name)."""
    width, height, pad = 600, 160, 4
    top = max(v for _, v in points) or 1
    start, span_x = points[0][0], max(1e-9, points[-1][0] - points[0][0])
    xy = [(pad + (width - 2 * pad) * (x - start) / span_x, height - pad - (height - 2 * pad) * v / top)
          for x, v in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    return (f'<figure class="chart"><svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(desc)}" '
            f'preserveAspectRatio="none"><polyline points="{line}" /></svg>'
            f'<figcaption>{esc(desc)}</figcaption></figure>')


def span(seconds: float | None) -> str:
    """A duration for people: ``12 s``, ``5 minutes``, ``3 hours``, ``2 days``."""
    if seconds is None:
        return "—"
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:.0f} s"


def rate(per_second: float | None, unit: str = "B") -> str:
    """A rate for people: ``1.5 MiB/s`` for bytes, ``3.2/s`` for counts; ``—`` while unknown."""
    if per_second is None:
        return "—"
    return f"{size(per_second)}/s" if unit == "B" else f"{per_second:.1f}/s"


def page(title: str, body: str, who: Principal | None, csrf: str = "") -> str:
    """The frame around every page: navigation for the operator or the tenant, logout."""
    nav = ""
    if who is not None:
        links = ([("Overview", "/console/"), ("Vaults", "/console/vaults"), ("Replication", "/console/replication"),
                  ("Jobs", "/console/jobs"), ("Audit log", "/console/audit")] if who.admin else [(who.vault, f"/console/vaults/{who.vault}")])
        items = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' for text, href in links)
        logout = form("/console/logout", csrf, "", "Log out", "logout")
        nav = f'<nav aria-label="Main"><ul>{items}</ul>{logout}</nav>'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)} · objvault</title><link rel="icon" href="/console/static/favicon.svg">'
            f'<link rel="stylesheet" href="/console/static/console.css">'
            f'<script src="/console/static/console.js" defer></script></head>'
            f'<body><a class="skip" href="#main">Skip to content</a><header><a class="brand" href="/console/">objvault</a>{nav}</header>'
            f'<main id="main"><h1>{esc(title)}</h1>{body}</main></body></html>')
