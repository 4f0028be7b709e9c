"""Figure layout shared by the report's figures and the selection rasters: titles wrapped to the space they have, so
long env names and model labels never run into a neighbouring panel's title."""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.text import Text


def fit_titles(fig: Figure, title: Text) -> None:
    """Wrap every visible axes title to its axes' width and the figure's title to the figure's width (at word
    breaks, or inside a word too long for one line), and make the figure taller by the lines added (the tallest
    title of each row of panels), so the panels keep their height. Call it once everything is drawn, before saving,
    on a figure whose layout engine makes room for titles (``layout="constrained"``).

    :param fig: the drawn figure
    :param title: its title (what ``fig.suptitle`` returned)
    """
    fig.canvas.draw()  # lay out first: the axes' widths are known only then
    fitted = []  # (title, its room in pixels, the row of panels it heads)
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if ax.get_visible() and spec is not None:
            fitted.append((ax.title, ax.get_window_extent().width, spec.rowspan.start))
    fitted.append((title, fig.bbox.width, -1))
    grown: dict[int, float] = {}  # row -> inches its tallest title grew by
    for text, width, row in fitted:
        before = text.get_window_extent().height
        _wrap(text, width)
        grown[row] = max(grown.get(row, 0.0), (text.get_window_extent().height - before) / fig.dpi)
    fig.set_figheight(fig.get_figheight() + sum(grown.values()))


def _wrap(text: Text, width: float) -> None:
    """Re-wrap ``text`` (its existing lines kept as breaks) at the most characters per line that fit ``width``.

    :param text: a title
    :param width: the room it has, in display pixels
    """
    lines = text.get_text().split("\n")
    chars = max(len(line) for line in lines)
    while chars > 8 and text.get_window_extent().width > width:
        chars -= max(1, chars // 20)
        text.set_text("\n".join(textwrap.fill(line, chars) for line in lines))
