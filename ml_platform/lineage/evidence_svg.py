"""The evidence bundle's picture of the lineage graph: an inline SVG drawn here, no graphviz.

A simple layered layout, left to right: one column per layer (raw -> validated -> features -> model
-> evaluation/promotion -> Bento -> deployment), the nodes of a layer stacked in its column, each
edge a curve from the right side of its source to the left side of its target with an arrow head.
The graph itself (which nodes, grouped how, which edges) is built by
:mod:`ml_platform.lineage.evidence` from the recorded lineage; this module only draws it.

Every text is escaped; the SVG references nothing outside itself (no fonts, no images, no links),
so it renders offline inside the bundle's HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

NODE_WIDTH = 236
COLUMN_WIDTH = 276
LINE_HEIGHT = 14
NODE_PADDING = 8
NODE_GAP = 14
TOP = 46
MARGIN = 12
FONT_SIZE = 11
#: Characters of a label line that fit a node (monospace at FONT_SIZE); longer ones are cut with "…".
LINE_CHARS = 33

#: Node status -> (fill, stroke, dash): ok, a failed check or gate, a missing link, nothing recorded.
STYLES: dict[str, tuple[str, str, str | None]] = {
    "ok": ("#e8f1fb", "#3b6ea5", None),
    "failed": ("#fdf0dc", "#b7791f", None),
    "missing": ("#fde8e8", "#c53030", "5 3"),
    "absent": ("#f2f2f2", "#8a8a8a", "3 3"),
}


def _cut(text: str, n: int = LINE_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _height(node: Mapping[str, Any]) -> int:
    return NODE_PADDING * 2 + LINE_HEIGHT * max(1, len(node["label"]))


def _route(
    x1: float, y1: float, x2: float, y2: float, source: int, target: int, heights: Sequence[float]
) -> str:
    """The path of an edge: a curve to the next column, or one that passes under the columns between."""
    between = heights[source + 1 : target]
    if not between or max(between) <= TOP:
        bend = max(30.0, (x2 - x1) / 2)
        return f"M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
    lane = max(between) - NODE_GAP / 2  # the gap under the lowest node of the columns it passes
    a, b = x1 + (COLUMN_WIDTH - NODE_WIDTH) / 2, x2 - (COLUMN_WIDTH - NODE_WIDTH) / 2
    return (
        f"M {x1:.1f} {y1:.1f} C {a:.1f} {y1:.1f}, {a:.1f} {lane:.1f}, {a + 20:.1f} {lane:.1f}"
        f" L {b - 20:.1f} {lane:.1f} C {b:.1f} {lane:.1f}, {b:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
    )


def render_svg(graph: Mapping[str, Any]) -> str:
    """The SVG of ``graph``: ``{"layers": [{"name", "title", "nodes": [...]}], "edges": [[from, to]]}``.

    A node is ``{"id", "label": [lines], "status": ok|failed|missing|absent, "detail"}``; ``detail``
    becomes its tooltip (``<title>``). Edges between unknown node ids are skipped.
    """
    layers: Sequence[Mapping[str, Any]] = graph.get("layers", [])
    where: dict[str, tuple[float, float, float]] = {}  # id -> (x, y, height)
    column_of: dict[str, int] = {}
    heights: list[float] = []
    for column, layer in enumerate(layers):
        y: float = TOP
        for node in layer["nodes"]:
            tall = _height(node)
            where[node["id"]] = (MARGIN + column * COLUMN_WIDTH, y, tall)
            column_of[node["id"]] = column
            y += tall + NODE_GAP
        heights.append(y)
    width = MARGIN * 2 + max(1, len(layers)) * COLUMN_WIDTH - (COLUMN_WIDTH - NODE_WIDTH)
    height = max(heights, default=TOP) + MARGIN
    out = [
        f'<svg class="lineage" role="img" width="{width}" height="{height:.0f}"'
        f' viewBox="0 0 {width} {height:.0f}" font-family="ui-monospace, Menlo, Consolas, monospace"'
        f' font-size="{FONT_SIZE}" aria-label="lineage graph">',
        "<title>Lineage graph: raw partitions to deployment</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7"'
        ' orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for column, layer in enumerate(layers):
        left = MARGIN + column * COLUMN_WIDTH
        out.append(
            f'<text x="{left + NODE_WIDTH / 2:.0f}" y="{TOP - 18}" text-anchor="middle" font-weight="bold"'
            f' fill="#222">{escape(_cut(str(layer["title"])))}</text>'
        )
    for source, target in graph.get("edges", []):
        if source not in where or target not in where:
            continue
        sx, sy, sh = where[source]
        tx, ty, th = where[target]
        x1, y1 = sx + NODE_WIDTH, sy + sh / 2
        x2, y2 = tx, ty + th / 2
        out.append(
            f'<path class="edge" data-from="{escape(source)}" data-to="{escape(target)}"'
            f' d="{_route(x1, y1, x2, y2, column_of[source], column_of[target], heights)}"'
            ' fill="none" stroke="#777" stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
    for layer in layers:
        for node in layer["nodes"]:
            x, top, h = where[node["id"]]
            fill, stroke, dash = STYLES.get(str(node.get("status")), STYLES["ok"])
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<g class="node {escape(str(node.get("status")))}" data-id="{escape(node["id"])}">'
                f"<title>{escape(str(node.get('detail') or ' / '.join(node['label'])))}</title>"
                f'<rect x="{x:.0f}" y="{top:.0f}" width="{NODE_WIDTH}" height="{h:.0f}" rx="5" fill="{fill}"'
                f' stroke="{stroke}" stroke-width="1.4"{dashed}/>'
            )
            for i, line in enumerate(node["label"]):
                weight = ' font-weight="bold"' if i == 0 else ""
                baseline = top + NODE_PADDING + LINE_HEIGHT * (i + 1) - 3
                out.append(
                    f'<text x="{x + NODE_PADDING:.0f}" y="{baseline:.0f}"'
                    f' fill="#111"{weight}>{escape(_cut(str(line)))}</text>'
                )
            out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
