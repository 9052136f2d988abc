"""The baseline gate: ``loadlab compare BASELINE CURRENT --fail-on`` and ``loadlab smoke
--baseline-app``. The same app against itself never fails; a 5 ms sleep added to an async handler
fails, names the new blocker, and shows it red in the differential flame graph."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loadlab.analysis.regress import RuleError, judge, mann_whitney_p, parse_rules
from loadlab.baseline import run_dirs
from loadlab.results import load_run
from tests.helpers import loadlab
from tests.test_smoke_app import junit_cases, project

RULES = "rps:-10%,p95:+20%,loop_busy:+10pp"


def test_rules_read_as_documented_and_bad_ones_say_what_to_write() -> None:
    rules = parse_rules("rps:-10%, p95:+20% ,loop_busy:+10pp,loop_lag:+15ms")
    assert [str(r) for r in rules] == ["rps:-10%", "p95:+20%", "loop_busy:+10pp", "loop_lag:+15ms"]
    assert rules[0].change(100.0, 85.0) == pytest.approx(-15.0) and rules[0].worse == -1
    assert rules[2].change(0.10, 0.25) == pytest.approx(15.0)
    for bad, said in [
        ("rps:10%", "must look like METRIC:+N%"),
        ("speed:+10%", "unknown metric 'speed'"),
        ("rps:-10pp", "rps takes %, not pp"),
        ("", "--fail-on is empty"),
    ]:
        with pytest.raises(RuleError, match=re.escape(said)):
            parse_rules(bad)


def test_mann_whitney_exact_p_values() -> None:
    # Three against three, fully apart: 1 split in C(6,3) = 20 is as extreme.
    assert mann_whitney_p([1, 2, 3], [4, 5, 6], worse=1) == pytest.approx(0.05)
    assert mann_whitney_p([4, 5, 6], [1, 2, 3], worse=-1) == pytest.approx(0.05)
    assert mann_whitney_p([4, 5, 6], [1, 2, 3], worse=1) == pytest.approx(1.0)
    assert mann_whitney_p([1, 2], [3, 4], worse=1) == pytest.approx(1 / 6)  # never below 0.05 with two
    assert mann_whitney_p([1, 3, 5], [2, 4, 6], worse=1) > 0.2  # interleaved: nothing to see
    # Large samples go to the normal approximation and still agree on a clear shift.
    assert mann_whitney_p(list(range(20)), [x + 30 for x in range(20)], worse=1) < 1e-6


def _fake_run(rps: float) -> dict[str, object]:
    row = {"name": "Aggregated", "method": "", "requests": 100, "failures": 0, "rps": rps, "p95_ms": 10.0}
    return {"stats": [row]}


def test_one_run_a_side_falls_back_to_thresholds_and_says_so() -> None:
    result = judge(parse_rules("rps:-10%"), [_fake_run(100.0)], [_fake_run(80.0)])
    assert result["regressed"] and not result["tested"]
    assert result["method"].startswith("thresholds only")
    assert result["rules"][0]["p_value"] is None
    # With three a side, a drop of 20 % whose runs overlap the baseline's is noise, not a regression.
    base = [_fake_run(v) for v in (100.0, 60.0, 110.0)]
    now = [_fake_run(v) for v in (80.0, 105.0, 75.0)]
    result = judge(parse_rules("rps:-10%"), base, now)
    assert result["tested"] and result["rules"][0]["exceeds"] and not result["regressed"]


SLOW = "    time.sleep(0.005)\n    return {"


@pytest.mark.live
@pytest.mark.slow
def test_gate_never_fails_an_app_against_itself_and_fails_the_slowed_one_naming_it(tmp_path: Path) -> None:
    folder = project(tmp_path)
    (folder / "slowapp.py").write_text((folder / "shopapp.py").read_text().replace("    return {", SLOW, 1))
    common = ("--locustfile", "locustfile.py", "--users", "10", "--duration", "3", "--repeats", "3", "-q")

    # Profiled, so that its baseline side can serve the slowed app's gate below (its diff flame graph).
    same = loadlab(
        "smoke", "--app", "shopapp:app", "--baseline-app", "shopapp:app", *common, "--fail-on", RULES,
        "--profile", "--out", "out", "--run", "same", cwd=folder, timeout=110,
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    assert "baseline gate: no regression (medians of 3 baseline and 3 current runs" in same.stdout
    assert "Mann–Whitney" in same.stdout
    # Several comparisons of the interleaved repeats, each way and under other rules: none fails.
    base = [load_run(d) for d in run_dirs(folder / "out" / "same" / "baseline")]
    now = [load_run(d) for d in run_dirs(folder / "out" / "same" / "current")]
    assert len(base) == len(now) == 3
    for rules in (RULES, "rps:-10%,p99:+25%,loop_lag:+10ms", "p95:+20%,loop_busy:+10pp,fail_ratio:+1pp"):
        for a, b in ((base, now), (now, base)):
            result = judge(parse_rules(rules), a, b)
            assert not result["regressed"], json.dumps(result["rules"], indent=1)
    cli = loadlab("compare", "out/same/current", "out/same/baseline", "--fail-on", RULES, cwd=folder, timeout=30)
    assert cli.returncode == 0, cli.stdout + cli.stderr

    # The slowed app against that stored baseline (--baseline DIR): three runs, not six.
    slow = loadlab(
        "smoke", "--app", "slowapp:app", "--baseline", "out/same/baseline", *common, "--fail-on", RULES,
        "--profile", "--out", "out", "--run", "slow", "--junit-xml", "gate.xml", cwd=folder, timeout=110,
    )  # fmt: skip
    assert slow.returncode == 1, slow.stdout + slow.stderr
    line = (folder / "slowapp.py").read_text().splitlines().index("    time.sleep(0.005)") + 1
    assert "baseline gate: REGRESSION" in slow.stdout
    assert f"appeared: list_items in slowapp.py:{line}" in slow.stdout
    gate = folder / "out" / "slow" / "baseline-gate"
    summary = (gate / "comparison.md").read_text()
    assert "**REGRESSION**" in summary and f"list_items in slowapp.py:{line}" in summary
    assert "loadlab baseline gate" in (folder / "out" / "slow" / "smoke.md").read_text()
    cases = junit_cases(folder / "gate.xml")
    assert any(c.find("failure") is not None and c.get("classname") == "loadlab.baseline" for c in cases.values())
    # The differential flame graph: the handler that now sleeps is a new frame, drawn red.
    svg = (gate / "flamegraph-loop-diff.svg").read_text()
    frame = re.search(r'data-status="new in CURRENT"><title>list_items \(slowapp\.py\)[^<]*</title><rect[^>]*', svg)
    assert frame is not None, "list_items is not a new frame in the differential flame graph"
    assert 'fill="rgb(235,60,60)"' in frame.group(0)
    assert "flamegraph-loop-diff.svg" in (gate / "comparison.html").read_text()
    # Plain `loadlab compare` of the two folders draws it too, in its comparison.html.
    plain = loadlab("compare", "out/same/baseline", "out/slow", "--out", "cmp", cwd=folder, timeout=60)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "new in CURRENT" in (folder / "cmp" / "flamegraph-loop-diff.svg").read_text()
    assert "flamegraph-loop-diff.svg" in (folder / "cmp" / "comparison.html").read_text()
