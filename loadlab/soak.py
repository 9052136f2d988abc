"""``loadlab soak`` (``make soak``, not in CI): a long run of mixed load on the healthy routes, with
the server's and the harness's memory sampled each minute; it fails when memory grows steadily.

"Steadily" means both: a least-squares slope above ``MAX_SLOPE_MB_PER_MIN`` over the minutes after
the first (the first is warm-up: caches, pools and lazily imported modules fill it), and memory
higher at most minutes than the minute before. Noise goes up and down; a leak only goes up.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from loadlab.config import ProfileConfig, demo_path
from loadlab.progress import Progress
from loadlab.results import new_run_dir, point_latest, write_json

MAX_SLOPE_MB_PER_MIN = 1.0
RISING_SHARE = 0.8  # of the minute-to-minute steps that went up
SOAK_LOCUSTFILE = demo_path("loadtests", "soak.py")


def per_minute(timeseries: list[dict[str, Any]], key: str) -> list[float]:
    """The value of ``key`` at each whole minute of the run (the last sample before it)."""
    out: list[float] = []
    minute = 1
    last: float | None = None
    for point in timeseries:
        value = point.get(key)
        if not isinstance(value, int | float):
            continue
        if point["t"] >= 60 * minute and last is not None:
            out.append(last)
            minute += 1
        last = float(value)
    if last is not None:
        out.append(last)
    return out


def slope(values: list[float]) -> float:
    """Least-squares slope, per step."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def judge_memory(minutes: list[float]) -> dict[str, Any]:
    """Whether memory sampled once a minute grew steadily, with the figures that say so."""
    settled = minutes[1:] if len(minutes) > 2 else minutes
    steps = [b - a for a, b in zip(settled, settled[1:], strict=False)]
    rising = sum(1 for d in steps if d > 0) / len(steps) if steps else 0.0
    rate = slope(settled)
    leak = rate > MAX_SLOPE_MB_PER_MIN and rising >= RISING_SHARE
    return {
        "minutes_mb": minutes,
        "growth_mb": round(minutes[-1] - minutes[0], 1) if minutes else 0.0,
        "slope_mb_per_min": round(rate, 3),
        "rising_share": round(rising, 2),
        "steady_growth": leak,
    }


def run_soak(base: ProfileConfig, progress: Progress) -> tuple[Path, bool]:
    """Run the soak and write ``soak.json`` and ``soak.md``; return the folder and whether it passed."""
    from loadlab.runner import run_once

    cfg = replace(base, locustfile=SOAK_LOCUSTFILE, tags=("healthy",), variants=(), profile=False).validated()
    run_dir = new_run_dir(cfg.profiles_dir, "soak", cfg.out)
    if cfg.out is None:
        point_latest(cfg.profiles_dir, run_dir)
    progress.note(f"soak folder: {run_dir} ({cfg.duration:g} s of mixed healthy load, {cfg.users} users)")
    run = run_once(cfg, run_dir, progress, variant="soak")
    verdicts = {key: judge_memory(per_minute(run["timeseries"], key)) for key in ("server_rss_mb", "harness_rss_mb")}
    passed = not any(v["steady_growth"] for v in verdicts.values())
    write_json(run_dir / "soak.json", {"passed": passed, "memory": verdicts})
    lines = ["# Soak", "", f"{'PASSED' if passed else 'FAILED'}: {cfg.duration:g} s, {cfg.users} users", ""]
    lines += [
        "| process | RSS each minute (MB) | growth | slope after minute 1 | rising steps |",
        "|---|---|---|---|---|",
    ]
    for key, v in verdicts.items():
        series = " ".join(f"{m:.0f}" for m in v["minutes_mb"])
        lines.append(
            f"| {key.removesuffix('_rss_mb')} | {series} | {v['growth_mb']:+.1f} MB | "
            f"{v['slope_mb_per_min']:+.2f} MB/min | {v['rising_share']:.0%} |"
        )
    (run_dir / "soak.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir, passed
