"""A flame graph (icicle: callers on top, callees below) as one self-contained SVG file.

Threads are grouped by role — event loop, AnyIO workers, process-pool children, other — so a
blocked loop and a busy threadpool read as separate blocks. Application frames that ran on the
event loop thread while it was not parked are drawn in red: they are what blocked the loop.
Hover a frame for its full name and sample count; click one to zoom into it, click the top bar
to zoom out.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from importlib.resources import files

from loadlab.analysis.stacks import (
    Frame,
    Profile,
    Role,
    Thread,
    has_native_frames,
    is_idle_sample,
    is_library_file,
    is_loop_callback,
)

WIDTH = 1200
ROW = 17
TOP = 78
CHAR_PX = 6.6

COLORS = {
    "root": "#4a4a4a",
    "group": "#6b6b6b",
    "blocking": "#d62728",
    "app": "#f5a623",
    "library": "#8fb8de",
    "stdlib": "#c9c9c9",
    "native": "#e0d9c8",
    "waiting": "#a8d5a2",
    "folded": "#b7c7d9",
}
FOLDABLE = ("library", "stdlib", "native")
FOLD_THROUGH = 0.95  # a chain folds on through a frame whose main callee has this share of it
HIDDEN = ' display="none"'
LEGEND = (
    ("blocking", "your code on the event loop (blocked it)"),
    ("app", "your code, elsewhere"),
    ("library", "libraries"),
    ("stdlib", "standard library"),
    ("native", "native (C)"),
    ("waiting", "waiting (idle, sleep, I/O, lock)"),
    ("folded", "library frames, folded"),
)


@dataclass
class Node:
    name: str
    kind: str
    count: int = 0
    children: dict[str, Node] = field(default_factory=dict)

    def child(self, name: str, kind: str) -> Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node(name, kind)
        return node


def short_path(file: str) -> str:
    """A file path without the noise: the part after site-packages, the stdlib or the cwd."""
    f = file.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in f:
            return f.split(marker, 1)[1]
    if "/lib/python3" in f:
        return f.split("/lib/python3", 1)[1].split("/", 1)[-1]
    cwd = os.getcwd().replace("\\", "/") + "/"
    return f[len(cwd) :] if f.startswith(cwd) else f


def frame_label(frame: Frame) -> str:
    if frame.native:
        return f"{frame.name} [{os.path.basename(frame.file)}]"
    return f"{frame.name} ({short_path(frame.file)}:{frame.line})"


def group_label(thread: Thread, threads_in_group: int) -> str:
    if thread.role is Role.EVENT_LOOP:
        return f"event loop — {thread.name or 'thread'} (pid {thread.key.pid})"
    if thread.role is Role.ANYIO_WORKER:
        return f"AnyIO worker threads (pid {thread.key.pid}, {threads_in_group} threads)"
    if thread.role in (Role.ASGIREF_EXECUTOR, Role.LOOP_EXECUTOR, Role.EXECUTOR):
        return f"{thread.role.value} threads (pid {thread.key.pid}, {threads_in_group} threads)"
    if thread.role is Role.POOL_CHILD:
        return "process-pool children"
    return f"other threads (pid {thread.key.pid})"


def _group_key(thread: Thread) -> tuple[str, int]:
    pid = 0 if thread.role is Role.POOL_CHILD else thread.key.pid
    return thread.role.value, pid


def build_tree(profile: Profile, on_cpu_only: bool = False, loop_only: bool = False) -> Node:
    """Merge the profile's stacks into one tree, grouped by thread role; colour each frame.
    ``loop_only`` keeps the event-loop threads alone: the picture of what held the loop."""
    native = has_native_frames(profile)
    members: dict[tuple[str, int], set[int]] = {}
    for t in profile.threads.values():
        members.setdefault(_group_key(t), set()).add(t.key.tid)
    root = Node("all", "root")
    for stack in profile.stacks:
        thread = profile.threads[stack.thread]
        if loop_only and thread.role is not Role.EVENT_LOOP:
            continue
        idle = is_idle_sample(thread, stack.frames, native)
        if on_cpu_only and idle:
            continue
        blocking = thread.role is Role.EVENT_LOOP and is_loop_callback(stack.frames)
        node = root
        node.count += stack.count
        node = node.child(group_label(thread, len(members[_group_key(thread)])), "group")
        node.count += stack.count
        last = len(stack.frames) - 1
        for i, frame in enumerate(stack.frames):
            if frame.native and frame.name.startswith("0x") and i != last:
                continue  # an unsymbolised address inside libc says nothing to a reader
            node = node.child(frame_label(frame), _kind(frame, blocking, idle and i == last))
            node.count += stack.count
    return root


def _kind(frame: Frame, blocking: bool, waiting_leaf: bool) -> str:
    if waiting_leaf:
        return "waiting"
    if frame.native:
        return "native"
    if not is_library_file(frame.file):
        return "blocking" if blocking else "app"
    return "stdlib" if "site-packages" not in frame.file and "dist-packages" not in frame.file else "library"


_GROUP_ORDER = ("event loop", "AnyIO", "asgiref", "loop executor", "executor", "process-pool", "other")


def _order(node: Node) -> tuple[int, int]:
    # Thread groups in a fixed order, the event loop first; frames widest first.
    if node.kind == "group":
        return next(i for i, p in enumerate(_GROUP_ORDER) if node.name.startswith(p) or p == "other"), 0
    return 0, -node.count


def _package(label: str) -> str:
    """``Server.run (uvicorn/server.py:86)`` → ``uvicorn``; ``main (<frozen runpy>:88)`` → ``runpy``;
    a native frame, ``Handle__run [loop.c]``, → ``C``."""
    if label.endswith("]"):
        return "C"
    where = label.rsplit("(", 1)[-1].rsplit(":", 1)[0].strip("<>)")
    top = where.split("/", 1)[0]
    top = top.removeprefix("frozen ").removesuffix(".py")
    return top or "?"


def fold_library_chains(node: Node, counted: bool = True) -> Node:
    """A copy of the tree with each chain of two or more library, standard-library or native
    frames folded into one bar that names their packages: the launcher, the server and the
    framework between the thread's start and the app's own code read as a few bars, not thirty.

    A chain goes on through a frame whose main callee holds nearly all of it (FOLD_THROUGH); the
    few samples that went elsewhere hang under the folded bar. The unfolded tree stays in the SVG
    (the toggle), the raw profile and the speedscope file."""
    chain = [node]
    while chain[-1].kind in FOLDABLE and chain[-1].children:
        main = max(chain[-1].children.values(), key=lambda c: c.count)
        if main.kind not in FOLDABLE or main.count < FOLD_THROUGH * chain[-1].count:
            break
        chain.append(main)
    if len(chain) < 2:
        copy = Node(node.name, node.kind, node.count)
        for child in node.children.values():  # keyed by their (maybe folded) names, as Node.child does
            _merge_into(copy.children, fold_library_chains(child, counted))
        return copy
    packages = list(dict.fromkeys(_package(n.name) for n in chain))
    names = ", ".join(packages[:4]) + (", …" if len(packages) > 4 else "")
    # Uncounted (the differential graph): one name for every fold, so the two sides' bars match even
    # when their library frames differ (another launcher, a framework upgrade); the app's frames differ.
    folded = Node(f"{names}: {len(chain)} frames" if counted else "library frames (folded)", "folded", chain[0].count)
    for i, parent in enumerate(chain):
        onward = chain[i + 1] if i + 1 < len(chain) else None
        for child in parent.children.values():
            if child is not onward:
                _merge_into(folded.children, fold_library_chains(child, counted))
    return folded


def _merge_into(children: dict[str, Node], node: Node) -> None:
    same = children.get(node.name)
    if same is None:
        children[node.name] = node
        return
    same.count += node.count
    for child in node.children.values():
        _merge_into(same.children, child)


def _layout(root: Node, total: int, min_fraction: float) -> tuple[list[str], int]:
    """The frames of ``root`` as SVG groups, and the depth they reach."""
    rects: list[str] = []
    max_depth = 0

    def place(node: Node, x: float, depth: int, parent: int) -> None:
        nonlocal max_depth
        width = WIDTH * node.count / total
        if node.count / total < min_fraction:
            return
        me = len(rects)
        max_depth = max(max_depth, depth)
        y = TOP + depth * ROW
        share = 100 * node.count / total
        tip = f"{node.name}\n{node.count} samples, {share:.1f}% of all"
        light = ' fill="#fff"' if node.kind in ("root", "group", "blocking") else ""
        chars = int((width - 6) / CHAR_PX)
        text = node.name if len(node.name) <= chars else (node.name[: chars - 1] + "…" if chars > 3 else "")
        rects.append(
            f'<g class="f" data-x="{x:.2f}" data-w="{width:.2f}" data-d="{depth}" data-i="{me}" data-p="{parent}">'
            f"<title>{html.escape(tip)}</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{max(width - 0.5, 0.5):.2f}" height="{ROW - 1}" '
            f'fill="{COLORS[node.kind]}" rx="2"/>'
            f'<text x="{x + 3:.2f}" y="{y + ROW - 5}"{light}>{html.escape(text)}</text></g>'
        )
        cx = x
        for child in sorted(node.children.values(), key=_order):
            place(child, cx, depth + 1, me)
            cx += WIDTH * child.count / total

    place(root, 0.0, 0, -1)
    return rects, max_depth


def render_svg(root: Node, title: str, subtitle: str, min_fraction: float = 0.0005, folded: Node | None = None) -> str:
    """Lay ``root`` out as an icicle graph and return the SVG text. With ``folded`` (the same tree,
    library chains folded) that view shows first, with a toggle to the full one."""
    total = max(root.count, 1)
    full, full_depth = _layout(root, total, min_fraction)
    views = [("full", full)]
    max_depth = full_depth
    if folded is not None:
        short, short_depth = _layout(folded, total, min_fraction)
        views.insert(0, ("folded", short))
        max_depth = max(max_depth, short_depth)
    height = TOP + 22 + (max_depth + 2) * ROW
    legend, lx = [], 10.0
    for key, text in LEGEND:
        legend.append(
            f'<rect x="{lx:.0f}" y="44" width="12" height="12" fill="{COLORS[key]}"/>'
            f'<text x="{lx + 16:.0f}" y="54">{html.escape(text)}</text>'
        )
        lx += 16 + len(text) * CHAR_PX + 18
    body = "".join(
        f'<g class="view" id="{name}" transform="translate(0,22)"{"" if i == 0 else HIDDEN}>{"".join(rects)}</g>'
        for i, (name, rects) in enumerate(views)
    )
    return svg_page(height, title, subtitle, "".join(legend) + controls(folded is not None), body)


def svg_page(height: int, title: str, subtitle: str, header: str, body: str) -> str:
    """A flame graph's SVG document: title, subtitle, ``header`` (legend, controls), the frames
    in ``body`` (``g.view`` groups), and the script that zooms, folds, sorts and searches."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Verdana, sans-serif" font-size="11">'
        f"<style>.f:hover rect{{stroke:#000;stroke-width:0.8}} .f{{cursor:pointer}} .hit rect{{fill:#e040fb}}"
        f" .btn{{cursor:pointer;fill:#1f5fbf;text-decoration:underline}}</style>"
        f'<rect width="100%" height="100%" fill="#fcfcfc"/>'
        f'<text x="10" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>'
        f'<text x="10" y="36" fill="#444">{html.escape(subtitle)}</text>'
        f"{header}{body}{_zoom_script()}</svg>"
    )


def controls(foldable: bool) -> str:
    """The bar under the legend: unfold/fold, sort, and search (an HTML box inside the SVG)."""
    toggle = '<text id="fold" class="btn" x="10" y="83">show every frame</text>' if foldable else ""
    return (
        f"{toggle}"
        '<text id="sort" class="btn" x="150" y="83">sort: widest first</text>'
        '<foreignObject x="330" y="68" width="260" height="22">'
        '<input xmlns="http://www.w3.org/1999/xhtml" id="search" placeholder="search frames (e.g. sleep)" '
        'style="width:240px;font-size:11px"/></foreignObject>'
        '<text id="found" x="600" y="83" fill="#7b1fa2"></text>'
    )


def _zoom_script() -> str:
    js = (files("loadlab.render") / "flamegraph.js").read_text(encoding="utf-8")
    js = js.replace("__WIDTH__", str(WIDTH)).replace("__CHAR_PX__", str(CHAR_PX))
    return f"<script><![CDATA[\n{js}]]></script>"


def render_flamegraph(
    profile: Profile,
    title: str,
    on_cpu_only: bool = False,
    subtitle_extra: str = "",
    loop_only: bool = False,
) -> str:
    """The whole pipeline: profile → tree → SVG text, opening on the folded view."""
    root = build_tree(profile, on_cpu_only, loop_only)
    what = "on-CPU samples only (waiting removed)" if on_cpu_only else "all samples, idle included"
    if loop_only:
        what = "samples of the event-loop thread (parked in its selector when idle)"
    subtitle = f"{root.count} {what}. {subtitle_extra}".strip()
    return render_svg(root, title, subtitle, folded=fold_library_chains(root))
