"""What held the event loop during a run, named from each source that saw it: the app's stall
watchdog (``run.json``'s ``stalls``), its loop sampler (``loop_samples``) and, when py-spy ran, the
analysis's blockers. Reads stored data, returns data; ``loadlab smoke`` and the baseline gate
present it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadlab.analysis.verdicts import advice_for
from loadlab.results import loop_analysis


@dataclass(frozen=True)
class Culprit:
    """A function of the app that held the event loop during the run, from one source."""

    source: str  # "stall watchdog", "loop sampler" or "py-spy"
    function: str
    file: str | None
    line: int | None
    route: str | None
    kind: str  # wait, cpu, gil or unknown
    count: int  # stalls, or samples
    total_ms: float | None  # stalls' total; the sampler's estimate
    share: float | None = None  # of the loop's samples (sampler, py-spy)
    advice: str = field(default="", compare=False)

    @property
    def where(self) -> str:
        if not self.file:
            return "?"
        return f"{short_file(self.file)}:{self.line}"

    def text(self) -> str:
        """``slow_items in app.py:14 (route /items): 12 stalls, 480 ms in all, wait``."""
        route = f" (route {self.route})" if self.route else ""
        if self.source == "stall watchdog":
            figure = f"{self.count} stall{'s' if self.count != 1 else ''}, {self.total_ms:.0f} ms in all"
        else:
            figure = f"{self.share or 0:.0%} of the loop's samples ({self.count})"
        return f"{self.function} in {self.where}{route}: {figure}, {self.kind} [{self.source}]"


def short_file(file: str) -> str:
    """A path relative to the current folder when it is inside it, else its last two parts."""
    try:
        rel = os.path.relpath(file)
    except ValueError:
        rel = file
    if not rel.startswith(".."):
        return rel
    return "/".join(file.split("/")[-2:])


MIN_SAMPLER_SHARE = 0.02  # below this a function is noise in the loop sampler's counts
MIN_PROFILE_SHARE = 0.05  # as verdicts.BLOCKER_SHARE


def _advice(kind: str, place: str | None = None) -> str:
    return advice_for({"kind": kind, "place": place}, "")


def stall_culprits(stalls: Sequence[Mapping[str, Any]], since: float | None = None) -> list[Culprit]:
    """The app's stall records grouped by function, line and route, longest total first."""
    groups: dict[tuple[str, str, int, str | None], list[Mapping[str, Any]]] = {}
    for s in stalls:
        if not s.get("file") or (since is not None and float(s.get("started_at") or 0) < since):
            continue
        groups.setdefault((s["function"], s["file"], int(s["line"]), s.get("route")), []).append(s)
    out = []
    for (function, file, line, route), group in groups.items():
        kinds = [str(s.get("kind") or "unknown") for s in group]
        kind = max(set(kinds), key=kinds.count)
        total = sum(float(s.get("duration_ms") or 0) for s in group)
        out.append(Culprit("stall watchdog", function, file, line, route, kind, len(group), total, None, _advice(kind)))
    return sorted(out, key=lambda c: -(c.total_ms or 0))


def sampler_culprits(snapshot: Mapping[str, Any] | None) -> list[Culprit]:
    """The loop sampler's functions (``/debug/samples``) that held the loop in a visible share."""
    if not snapshot or not snapshot.get("ticks"):
        return []
    ticks, hz = int(snapshot["ticks"]), float(snapshot.get("hz") or 100)
    out = []
    for s in snapshot.get("samples", []):
        counts = {k: int(s.get(k) or 0) for k in ("cpu", "wait", "gil")}
        n = sum(counts.values())
        if not s.get("file") or n / ticks < MIN_SAMPLER_SHARE:
            continue
        kind = max(counts, key=lambda k: counts[k])
        out.append(
            Culprit(
                "loop sampler", s["function"], s["file"], s.get("line"), s.get("route"), kind, n,
                round(n * 1000 / hz, 1), n / ticks, _advice(kind),
            )
        )  # fmt: skip
    return sorted(out, key=lambda c: -c.count)


def profile_culprits(run: Mapping[str, Any]) -> list[Culprit]:
    """py-spy's blockers of the loop (``analysis.loop.blockers``), the user's code only."""
    loop = loop_analysis(dict(run))
    if not loop:
        return []
    out = []
    for b in loop["blockers"]:
        if b.get("file") and b["share"] >= MIN_PROFILE_SHARE:
            place = b.get("place")
            out.append(
                Culprit(
                    "py-spy", b["function"], b["file"], b["line"], b.get("route"), b["kind"], b["samples"], None,
                    b["share"], _advice(b["kind"], place if isinstance(place, str) else None),
                )
            )  # fmt: skip
    return out


def culprits_of(run: Mapping[str, Any]) -> list[Culprit]:
    """Every source's culprits, the most telling first: py-spy's, the stalls, then the sampler's."""
    return profile_culprits(run) + stall_culprits(run.get("stalls") or []) + sampler_culprits(run.get("loop_samples"))
