"""``loadlab compare``: which runs are repeats of one another (same name *and* same app,
locustfile and variant or tags), and a folder given twice counting once. In-process, on run
folders written by hand (fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from loadlab.analysis.compare import compare
from loadlab.cli import main
from loadlab.report import write_comparison


def _stats(rps: float) -> list[dict[str, Any]]:
    def row(name: str, rps: float) -> dict[str, Any]:
        return {
            "name": name,
            "method": "GET" if name != "Aggregated" else "",
            "requests": int(rps * 10),
            "failures": 0,
            "rps": rps,
            "p50_ms": 10.0,
            "p95_ms": 20.0,
            "p99_ms": 30.0,
        }

    return [row("/x", rps), row("/health (canary)", 2.0), row("Aggregated", rps + 2.0)]


def _run(
    d: Path,
    *,
    rps: float,
    app: str = "target_app.main:app",
    locustfile: str = "loadtests/db_routes.py",
    variant: str | None = None,
    tags: tuple[str, ...] = (),
) -> Path:
    d.mkdir(parents=True)
    record = {
        "schema_version": 1,
        "kind": "run",
        "status": "complete",
        "variant": variant,
        "config": {"app": app, "locustfile": locustfile, "tags": list(tags), "users": 20},
        "stats": _stats(rps),
        "timeseries": [],
    }
    (d / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return d


def _suite(d: Path, variants: dict[str, float], *, locustfile: str, app: str = "target_app.main:app") -> Path:
    for name, rps in variants.items():
        _run(d / name, rps=rps, app=app, locustfile=locustfile, variant=name, tags=(name,))
    record = {
        "schema_version": 1,
        "kind": "suite",
        "status": "complete",
        "config": {"app": app, "locustfile": locustfile, "tags": [], "users": 20},
        "variants": [{"name": name, "dir": name, "status": "complete"} for name in variants],
    }
    (d / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return d


def _compared(paths: list[Path], out: Path) -> dict[str, Any]:
    write_comparison(paths, out)
    result: dict[str, Any] = json.loads((out / "comparison.json").read_text())
    return result


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in result["rows"]}


def test_suites_of_different_locustfiles_keep_a_shared_variant_apart(tmp_path: Path) -> None:
    db = _suite(tmp_path / "db", {"blocking": 20.0, "threadpool": 700.0}, locustfile="loadtests/db_routes.py")
    files = _suite(tmp_path / "files", {"blocking": 3900.0, "stream": 900.0}, locustfile="loadtests/files_routes.py")
    result = _compared([db, files], tmp_path / "out")
    rows = _rows(result)
    assert list(rows) == ["blocking (db_routes)", "threadpool", "blocking (files_routes)", "stream"]
    assert result["baseline"] == "blocking (db_routes)"
    assert rows["blocking (db_routes)"]["runs"] == 1 and rows["blocking (files_routes)"]["runs"] == 1
    assert rows["blocking (files_routes)"]["rps"]["median"] == 3900.0
    assert rows["blocking (files_routes)"]["setup"]["locustfile"] == "loadtests/files_routes.py"
    (note,) = result["notes"]
    assert "blocking" in note and "locustfile" in note
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "blocking (files_routes)" in md and "## Notes" in md
    assert "Notes" in (tmp_path / "out" / "comparison.html").read_text()


def test_repeats_of_one_suite_are_merged_and_read_as_before(tmp_path: Path) -> None:
    # The same setup twice; the locustfile is spelled differently but is the same path.
    one = _suite(tmp_path / "rep1", {"blocking": 19.0, "threadpool": 760.0}, locustfile="loadtests/db_routes.py")
    two = _suite(tmp_path / "rep2", {"blocking": 21.0, "threadpool": 790.0}, locustfile="./loadtests/db_routes.py")
    result = _compared([one, two], tmp_path / "out")
    rows = _rows(result)
    assert list(rows) == ["blocking", "threadpool"]
    assert rows["blocking"]["runs"] == 2 and rows["threadpool"]["runs"] == 2
    assert rows["blocking"]["rps"] == {"median": 20.0, "low": 19.0, "high": 21.0}
    assert rows["blocking"]["setup"] == {
        "app": "target_app.main:app",
        "locustfile": "loadtests/db_routes.py",
        "tags": ["blocking"],
    }
    assert result["notes"] == []
    assert "Notes" not in (tmp_path / "out" / "comparison.md").read_text()


def test_the_same_folder_given_three_times_counts_once(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", rps=100.0)
    result = _compared([a, a, tmp_path / "." / "a"], tmp_path / "out")
    (row,) = result["rows"]
    assert (row["name"], row["runs"]) == ("a", 1)
    assert row["rps"] == {"median": 100.0, "low": 100.0, "high": 100.0}
    (note,) = result["notes"]
    assert "3 times" in note and "counts once" in note
    assert note in (tmp_path / "out" / "comparison.md").read_text()


def test_a_variant_given_alone_and_in_its_suite_counts_once(tmp_path: Path) -> None:
    suite = _suite(tmp_path / "s", {"blocking": 20.0, "threadpool": 700.0}, locustfile="loadtests/db_routes.py")
    result = _compared([suite, suite / "blocking"], tmp_path / "out")
    assert [(r["name"], r["runs"]) for r in result["rows"]] == [("blocking", 1), ("threadpool", 1)]
    assert len(result["notes"]) == 1 and "counts once" in result["notes"][0]


def test_run_folders_of_different_apps_are_not_merged(tmp_path: Path) -> None:
    mine = _run(tmp_path / "mine" / "run", rps=100.0, app="myapp:app", locustfile="lf.py")
    other = _run(tmp_path / "other" / "run", rps=1000.0, app="otherapp:app", locustfile="lf.py")
    result = _compared([mine, other], tmp_path / "out")
    rows = _rows(result)
    assert list(rows) == ["run (myapp:app)", "run (otherapp:app)"]
    assert rows["run (myapp:app)"]["runs"] == 1 and rows["run (otherapp:app)"]["runs"] == 1
    assert rows["run (otherapp:app)"]["rps_ratio"] == 10.0
    assert "app" in result["notes"][0]


def test_compare_on_records_names_apart_runs_of_different_tags() -> None:
    def record(rps: float, tags: list[str]) -> dict[str, Any]:
        config = {"app": "a:app", "locustfile": "lf.py", "tags": tags}
        return {"config": config, "stats": [{"name": "/x", "rps": rps, "p95_ms": 1.0}]}

    result = compare([("run", record(10.0, ["io"])), ("run", record(20.0, ["cpu"])), ("run", record(12.0, ["io"]))])
    assert [(r["name"], r["runs"]) for r in result["rows"]] == [("run (-T io)", 2), ("run (-T cpu)", 1)]


def test_cli_prints_the_notes(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", rps=100.0)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compare", str(a), str(a), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: " in result.stderr and "2 times" in result.stderr
    assert result.stdout.strip() == str(out / "comparison.html")
