"""The benchmark's pure helpers (no server, no timing): spreads, the interleaved order, paired
ratios, the hop cost and the size of the synthetic 1,000,000-sample profile."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from benchmarks._items import pyspy_floor
from benchmarks._render import markdown
from benchmarks._stats import Spread, hop_cost_us, interleaved, paired_ratios, synthesize_raw, total_samples

DATA = Path(__file__).parent / "data"


def test_spread_is_median_and_range() -> None:
    s = Spread.of([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    assert s.text(1) == "2.0 (1.0–3.0)"
    assert Spread.of([0.021, 0.01, 0.03]).text(1, percent=True) == "2.1% (1.0%–3.0%)"
    assert Spread.of([5.0]).text(1, " s") == "5.0 s"
    with pytest.raises(ValueError):
        Spread.of([])


def test_interleaved_order_is_a_b_a_b() -> None:
    assert [label for _, label in interleaved(["A", "B"], 3)] == ["A", "B", "A", "B", "A", "B"]
    assert interleaved(["A", "B", "C"], 2)[3] == (1, "A")


def test_paired_ratios_and_hop_cost() -> None:
    assert paired_ratios([100.0, 200.0], [97.0, 190.0]) == [0.97, 0.95]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])
    assert hop_cost_us(10_000.0, 5_000.0) == pytest.approx(100.0)


def test_synthetic_profile_has_exactly_a_million_samples() -> None:
    with gzip.open(DATA / "io-threadpool.raw.txt.gz", "rt", encoding="utf-8") as f:
        recorded = [line for line in f if line.strip()]
    lines = synthesize_raw(recorded, 1_000_000, 25)
    assert total_samples(lines) == 1_000_000
    assert len(lines) == 25 * len(recorded)
    assert len({line.rpartition(" ")[0] for line in lines}) > 20 * len(recorded)  # line variants are distinct


def test_markdown_never_hides_a_miss() -> None:
    result = {
        "timestamp": "20260101-000000",
        "command": "python -m benchmarks.bench",
        "settings": {"repeats": 3, "duration_s": 6.0},
        "pinning": {"how": "taskset"},
        "machine": {"cores": 2, "cpu_model": "x"},
        "load": {"loadavg_1m_at_start": 0.1},
        "wall_s": 600.0,
        "hygiene_text": "",
        "rows": [{"item": "2. overhead", "goal": "≤ 3%", "measured": "loss", "figure": "9%", "met": False, "note": ""}],
    }
    text = markdown(result)
    assert "**missed**" in text and "Missed: 2. overhead." in text


def test_pyspy_cost_fits_cost_per_thread_and_reads_the_targets_rate() -> None:
    from benchmarks.pyspy_cost import BASE, _fit, _rate

    rows = [
        {
            "setting": {"threads": t, "children": 0, "same_core": False, "rate": 100, "flags": list(BASE)},
            "us_per_sample": us,
        }
        for t, us in ((1, 300.0), (10, 1200.0), (40, 4200.0))
    ]
    a, b = _fit(rows, nonblocking=False) or (0.0, 0.0)
    assert b == pytest.approx(100.0) and a == pytest.approx(200.0)
    assert _fit(rows, nonblocking=True) is None  # no nonblocking rows: nothing to fit
    lines = [(10.0, 0), (10.5, 500), (11.0, 1000), (12.0, 5000)]
    assert _rate(lines, 10.0, 11.0) == pytest.approx(1000.0)  # only the window's own lines count


def test_pyspy_floor_counts_only_rounds_where_the_server_wanted_its_whole_core() -> None:
    rounds = [
        {"server_cpu_percent": 97.0, "profiler_cpu_percent": 3.0},  # CPU-bound: py-spy took 3% of it
        {"server_cpu_percent": 42.0, "profiler_cpu_percent": 12.0},  # time to spare: no floor
        {"server_cpu_percent": 99.5, "profiler_cpu_percent": None},  # no profiler measured
    ]
    floors = pyspy_floor(rounds)
    assert floors[0] == pytest.approx(0.03)
    assert floors[1:] == [None, None]
