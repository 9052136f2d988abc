"""The soak test's judgement of memory, on synthetic series (the 10-minute run is `make soak`)."""

from __future__ import annotations

from loadlab.soak import judge_memory, per_minute


def test_per_minute_takes_the_last_sample_of_each_minute() -> None:
    series = [{"t": t, "server_rss_mb": 100 + t / 60} for t in range(0, 185, 5)]
    assert per_minute(series, "server_rss_mb") == [100 + 55 / 60, 100 + 115 / 60, 100 + 175 / 60, 100 + 180 / 60]


def test_warm_up_then_flat_passes() -> None:
    verdict = judge_memory([80, 140, 141, 140, 142, 141, 141, 142, 141, 141])
    assert not verdict["steady_growth"]
    assert abs(verdict["slope_mb_per_min"]) < 0.5


def test_steady_growth_fails() -> None:
    verdict = judge_memory([80, 140, 143, 146, 148, 151, 154, 157, 159, 162])
    assert verdict["steady_growth"] and verdict["slope_mb_per_min"] > 2


def test_noise_that_goes_up_and_down_passes() -> None:
    assert not judge_memory([120, 130, 135, 128, 136, 129, 137, 130, 138, 131])["steady_growth"]
