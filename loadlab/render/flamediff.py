"""A differential flame graph of the event-loop thread: BASELINE against CURRENT.

Laid out as CURRENT (a frame's width is its share of the current runs' loop samples); a frame
whose share grew is red, one whose share shrank is blue, the deeper the colour the larger the
move (full at :data:`FULL_AT` of the loop); a frame the baseline never had is red with a dashed
outline. Samples of several runs on one side are added together; the thread's name and PID,
which differ from run to run, are left out, and so are line numbers (a frame is its function and
file), so an edit higher up in a file does not make every frame below it look new.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from loadlab.analysis.stacks import Profile
from loadlab.render.flamegraph import (
    CHAR_PX,
    ROW,
    TOP,
    WIDTH,
    Node,
    _order,
    build_tree,
    controls,
    fold_library_chains,
    svg_page,
)

_LINE = re.compile(r":\d+\)$")
FULL_AT = 0.10  # a move of 10 percentage points of the loop's samples is drawn at full colour
LOOP = "event loop"


def loop_tree(profiles: Iterable[Profile]) -> Node:
    """The event-loop threads of every profile as one tree under a root named ``event loop``."""
    root = Node(LOOP, "root")
    for profile in profiles:
        for group in build_tree(profile, loop_only=True).children.values():
            _merge(root, group)
    return root


def _merge(into: Node, node: Node) -> None:
    into.count += node.count
    for child in node.children.values():
        # Without its line: a change above a function moves its lines, not what it is.
        _merge(into.child(_LINE.sub(")", child.name), child.kind), child)


def _colour(delta: float, new: bool) -> str:
    strength = min(1.0, abs(delta) / FULL_AT) if not new else 1.0
    if abs(delta) < 0.002 and not new:
        return "#e8e8e8"
    light = int(235 - 175 * strength)
    return f"rgb(235,{light},{light})" if delta > 0 or new else f"rgb({light},{light},235)"


def render_diff_svg(base: Node, now: Node, title: str, subtitle: str, min_fraction: float = 0.001) -> str:
    """Lay ``now`` out as an icicle graph, each frame coloured by its move from ``base``; library
    chains folded on both sides alike, as in every loadlab flame graph."""
    base, now = fold_library_chains(base, counted=False), fold_library_chains(now, counted=False)
    total, base_total = max(now.count, 1), max(base.count, 1)
    rects: list[str] = []
    max_depth = 0

    def place(node: Node, before: Node | None, x: float, depth: int, parent: int) -> None:
        nonlocal max_depth
        width = WIDTH * node.count / total
        if node.count / total < min_fraction:
            return
        me = len(rects)
        max_depth = max(max_depth, depth)
        y = TOP + depth * ROW
        share = node.count / total
        was = before.count / base_total if before is not None else 0.0
        delta, new = share - was, before is None
        status = "new in CURRENT" if new else ("grew" if delta > 0.002 else "shrank" if delta < -0.002 else "same")
        tip = f"{node.name}\nnow {share:.1%} of the loop's samples, before {was:.1%} ({100 * delta:+.1f} pp): {status}"
        chars = int((width - 6) / CHAR_PX)
        text = node.name if len(node.name) <= chars else (node.name[: chars - 1] + "…" if chars > 3 else "")
        dash = ' stroke="#900" stroke-dasharray="3,2"' if new and depth else ""
        rects.append(
            f'<g class="f" data-x="{x:.2f}" data-w="{width:.2f}" data-d="{depth}" data-i="{me}" data-p="{parent}"'
            f' data-status="{status}">'
            f"<title>{html.escape(tip)}</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{max(width - 0.5, 0.5):.2f}" height="{ROW - 1}" '
            f'fill="{_colour(delta, new)}" rx="2"{dash}/>'
            f'<text x="{x + 3:.2f}" y="{y + ROW - 5}">{html.escape(text)}</text></g>'
        )
        cx = x
        for child in sorted(node.children.values(), key=_order):
            place(child, before.children.get(child.name) if before is not None else None, cx, depth + 1, me)
            cx += WIDTH * child.count / total

    place(now, base, 0.0, 0, -1)
    height = TOP + 22 + (max_depth + 2) * ROW
    legend = (
        '<rect x="10" y="44" width="12" height="12" fill="rgb(235,60,60)"/>'
        '<text x="26" y="54">grew (or new, dashed)</text>'
        '<rect x="180" y="44" width="12" height="12" fill="rgb(60,60,235)"/><text x="196" y="54">shrank</text>'
        '<rect x="270" y="44" width="12" height="12" fill="#e8e8e8"/><text x="286" y="54">about the same</text>'
    )
    body = f'<g class="view" id="frames" transform="translate(0,22)">{"".join(rects)}</g>'
    return svg_page(height, title, subtitle, legend + controls(False), body)
