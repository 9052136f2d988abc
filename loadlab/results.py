"""The run folder and its ``run.json``: a versioned, documented record that is never overwritten.

``run.json`` is a public interface for CI scripts (see the README's "run.json" section). A run
folder is created once; ``run.json`` is rewritten atomically as the run advances, so a run stopped
at any point still holds a readable record with ``status: incomplete`` and the phase it reached.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import operator
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NotRequired, TypedDict

SCHEMA_VERSION = 1
RUN_JSON = "run.json"
RAW_PROFILE = "profile.raw.txt"  # py-spy's raw folded output: the source of truth of a run's profile


CLAIM_FILE = ".loadlab-run"  # created exclusively: the one run that owns the folder


class RunFolderError(OSError):
    """The run folder cannot be created or written; the message says which and why."""


class StoredDataError(ValueError):
    """A stored file (``run.json``, ``routes.json``, …) cannot be used; the message names it."""


def _claim(folder: Path) -> bool:
    """Claim ``folder`` for this run, atomically: of two runs started together, one wins."""
    try:
        fd = os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return True


def new_run_dir(profiles_dir: Path, name: str, out: Path | None = None) -> Path:
    """Create and claim the run folder: ``out`` if given (must not exist, or be empty), else
    ``profiles_dir/<timestamp>-<name>``, with a numeric suffix rather than reusing a folder.

    The claim is a file created with ``O_EXCL``, so two runs started at the same instant into
    one ``--out`` cannot both have it: the second is refused, never mixed into the first.
    """
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if not _claim(out):
                raise RunFolderError(f"--out {out} is already used by another run; pick a new folder")
            if any(p.name != CLAIM_FILE for p in out.iterdir()):
                (out / CLAIM_FILE).unlink()
                raise RunFolderError(f"--out {out} is not empty; pick a new folder")
            return out
        profiles_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            candidate = profiles_dir / (f"{stamp}-{name}" if n == 1 else f"{stamp}-{name}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            _claim(candidate)
            return candidate
    except RunFolderError:
        raise
    except OSError as exc:
        raise RunFolderError(f"cannot create a run folder under {out or profiles_dir}: {exc.strerror}") from exc
    raise RunFolderError(f"too many runs named {stamp}-{name} in {profiles_dir}")


def point_latest(profiles_dir: Path, run_dir: Path) -> None:
    """Make ``profiles_dir/latest`` a symlink to ``run_dir`` (replaced atomically; best effort)."""
    link = profiles_dir / "latest"
    tmp = profiles_dir / f".latest-{os.getpid()}"
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
        target = os.path.relpath(run_dir.resolve(), profiles_dir.resolve())
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise RunFolderError(f"cannot write {path}: {exc.strerror}") from exc


class UnknownSchemaError(StoredDataError):
    pass


def read_json(path: Path) -> Any:
    """A stored JSON file, or :class:`StoredDataError` naming the file and what is wrong with it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StoredDataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise StoredDataError(f"{path} is not UTF-8 text") from None


# The documented keys of run.json a reader relies on, with the type each must have when present.
_RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "status": str,
    "config": dict,
    "stats": list,
    "timeseries": list,
    "artefacts": dict,
    "pids": dict,
    "analysis": (dict, type(None)),
    "stalls": (list, type(None)),
    "variants": list,
}
_STATS_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "requests": int,
    "failures": int,
    "rps": (int, float),
}


def _check_shape(path: Path, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StoredDataError(f"{path} holds a JSON {type(data).__name__}, not a loadlab run record (an object)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnknownSchemaError(f"{path} has schema_version {version!r}; this loadlab reads version {SCHEMA_VERSION}")
    for key, kind in _RUN_KEYS.items():
        if key in data and not isinstance(data[key], kind):
            raise StoredDataError(f"{path}: {key!r} is {type(data[key]).__name__}, expected {_names(kind)}")
    for i, row in enumerate(data.get("stats", [])):
        if not isinstance(row, dict):
            raise StoredDataError(f"{path}: stats[{i}] is not an object")
        for key, kind in _STATS_KEYS.items():
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                raise StoredDataError(f"{path}: stats[{i}] has no {key!r} of type {_names(kind)}")
    for i, variant in enumerate(data.get("variants", [])):
        if not isinstance(variant, dict) or not isinstance(variant.get("dir"), str):
            raise StoredDataError(f"{path}: variants[{i}] has no 'dir'")
    return data


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read a run's ``run.json``, refusing versions this loadlab does not know and records whose
    documented keys do not have their documented shape (the error names the file and the key)."""
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {RUN_JSON}: is it a loadlab run folder?")
    return _check_shape(path, read_json(path))


# -- The shape of run.json: what readers may rely on (schema_version 1) --------------------------


class StatsRow(TypedDict):
    """One row of ``stats``: an endpoint as Locust named it, or the ``Aggregated`` total."""

    name: str
    method: str
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    min_ms: NotRequired[float | None]
    avg_ms: NotRequired[float | None]
    max_ms: NotRequired[float | None]


class Blocker(TypedDict):
    """A function the event loop was running when it was not parked: ``analysis.loop.blockers``."""

    function: str
    file: str | None  # None for the server's and framework's own code
    line: int | None
    handler: str | None
    route: str | None
    share: float  # of the loop thread's samples
    samples: int
    kind: str  # cpu, wait or unknown
    kind_from: NotRequired[str]


class LoopAnalysis(TypedDict):
    """``analysis.loop``: the event-loop threads that served requests, together."""

    threads: int
    samples: int
    startup_samples: int
    busy_share: float | None
    kinds: dict[str, int]
    blockers: list[Blocker]


CANARY_MARKERS = ("canary",)


def is_canary(name: str) -> bool:
    """The canary's row: the idle endpoint a user asks twice a second to see collateral damage."""
    return any(m in name for m in CANARY_MARKERS) or name == "/health"


def stats_rows(run: dict[str, Any]) -> list[StatsRow]:
    rows: list[StatsRow] = run.get("stats") or []
    return rows


def aggregated_row(run: dict[str, Any]) -> StatsRow | None:
    """Locust's total over every endpoint, if the run has one."""
    return next((s for s in stats_rows(run) if s["name"] == AGGREGATED), None)


def endpoint_rows(run: dict[str, Any]) -> list[StatsRow]:
    """The endpoints under load: every row but Locust's total and the canary."""
    return [s for s in stats_rows(run) if s["name"] != AGGREGATED and not is_canary(s["name"])]


def canary_row(run: dict[str, Any]) -> StatsRow | None:
    return next((s for s in stats_rows(run) if is_canary(s["name"])), None)


def load_users(run: dict[str, Any]) -> int:
    """The users that loaded the endpoints: all of them but the canary (at least one)."""
    return max(1, int((run.get("config") or {}).get("users", 1)) - 1)


def loop_analysis(run: dict[str, Any]) -> LoopAnalysis | None:
    loop: LoopAnalysis | None = (run.get("analysis") or {}).get("loop")
    return loop


def record_header(kind: str, config: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The keys every run.json starts with, a run's or a suite's."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "status": "incomplete",
        "reason": None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "env": env,
        "versions": versions(),
        "machine": machine(),
    }


class RunRecord:
    """A run folder's ``run.json``: created with its header, rewritten atomically on every
    :meth:`save`, loaded with its version and shape checked (:func:`load_run`)."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.dir = run_dir
        self.data = data

    @classmethod
    def create(cls, run_dir: Path, kind: str, config: dict[str, Any], env: dict[str, str], **fields: Any) -> RunRecord:
        record = cls(run_dir, {**record_header(kind, config, env), **fields})
        record.save()
        return record

    def save(self) -> None:
        write_json(self.dir / RUN_JSON, self.data)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("fastapi", "starlette", "uvicorn", "anyio", "locust", "py-spy", "loadlab"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "platform": platform.platform(),
    }


AGGREGATED = "Aggregated"  # Locust's name for the row of all requests together


def read_locust_stats(prefix: Path) -> list[dict[str, Any]]:
    """Locust's final statistics as run.json's ``stats``: one entry per endpoint and the
    ``Aggregated`` row, each with name, requests, failures, rps, p50_ms, p95_ms, p99_ms.

    Locust rewrites ``<prefix>_stats.csv`` once a second, but ``<prefix>.json`` (``--json-file``)
    at exit: when Locust is stopped early (the app crashed) the CSV misses the last second or two.
    The JSON is taken whenever it counts more requests than the CSV.
    """
    from_csv = _stats_from_csv(Path(f"{prefix}_stats.csv"))
    from_json = _stats_from_json(Path(f"{prefix}.json"))
    if from_json and _total(from_json) > _total(from_csv):
        return from_json
    return from_csv


def _total(rows: list[dict[str, Any]]) -> int:
    return sum(int(r["requests"]) for r in rows if r["name"] == AGGREGATED)


def _stats_from_csv(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append(
                {
                    "name": row["Name"],
                    "method": row.get("Type", ""),
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": round(float(row["Requests/s"]), 2),
                    "p50_ms": _num(row.get("50%")),
                    "p95_ms": _num(row.get("95%")),
                    "p99_ms": _num(row.get("99%")),
                    "min_ms": _num(row.get("Min Response Time")),
                    "avg_ms": _num(row.get("Average Response Time")),
                    "max_ms": _num(row.get("Max Response Time")),
                }
            )
    return rows


def _locust_percentile(times: Counter[int], count: int, share: float) -> float | None:
    """Locust's own percentile of its rounded response-time histogram (``stats.py``)."""
    if count == 0:
        return None
    wanted = int(count * share)
    seen = 0
    for t in sorted(times, reverse=True):
        seen += times[t]
        if count - seen <= wanted:
            return float(t)
    return 0.0


@dataclass
class _Entry:
    """One endpoint's (or all endpoints') figures as Locust's JSON gives them."""

    name: str
    method: str
    times: Counter[int]  # response time (ms, rounded as Locust rounds) -> requests
    requests: int
    failures: int
    total_ms: float
    min_ms: float | None
    max_ms: float
    start: float
    end: float

    @classmethod
    def parse(cls, e: dict[str, Any]) -> _Entry:
        start = float(e["start_time"])
        return cls(
            name=str(e["name"]),
            method=str(e.get("method") or ""),
            times=Counter({int(float(k)): int(v) for k, v in (e.get("response_times") or {}).items()}),
            requests=int(e["num_requests"]),
            failures=int(e["num_failures"]),
            total_ms=float(e["total_response_time"]),
            min_ms=None if e.get("min_response_time") is None else float(e["min_response_time"]),
            max_ms=float(e.get("max_response_time") or 0),
            start=start,
            end=float(e.get("last_request_timestamp") or start),
        )

    def __add__(self, other: _Entry) -> _Entry:
        mins = [m for m in (self.min_ms, other.min_ms) if m is not None]
        return _Entry(
            AGGREGATED, "", self.times + other.times, self.requests + other.requests,
            self.failures + other.failures, self.total_ms + other.total_ms, min(mins) if mins else None,
            max(self.max_ms, other.max_ms), min(self.start, other.start), max(self.end, other.end),
        )  # fmt: skip

    def row(self) -> dict[str, Any]:
        span = self.end - self.start
        return {
            "name": self.name,
            "method": self.method,
            "requests": self.requests,
            "failures": self.failures,
            "rps": round(self.requests / span, 2) if span > 0 else 0.0,
            "p50_ms": _locust_percentile(self.times, self.requests, 0.5),
            "p95_ms": _locust_percentile(self.times, self.requests, 0.95),
            "p99_ms": _locust_percentile(self.times, self.requests, 0.99),
            "min_ms": None if self.min_ms is None else round(self.min_ms, 2),
            "avg_ms": round(self.total_ms / self.requests, 2) if self.requests else None,
            "max_ms": round(self.max_ms, 2),
        }


def _stats_from_json(path: Path) -> list[dict[str, Any]]:
    """Rows like the CSV's from Locust's ``--json-file`` output (its entries, without an aggregate)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = sorted((_Entry.parse(e) for e in raw), key=lambda e: (e.name, e.method))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    if not entries:
        return []
    total = functools.reduce(operator.add, entries[1:], dataclasses.replace(entries[0], name=AGGREGATED, method=""))
    return [e.row() for e in entries] + [total.row()]


def read_locust_failures(prefix: Path) -> list[dict[str, Any]]:
    """Locust's ``<prefix>_failures.csv``: each distinct failure (method, name, error, occurrences),
    most frequent first."""
    path = Path(f"{prefix}_failures.csv")
    out = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out.append(
                    {
                        "method": row["Method"],
                        "name": row["Name"],
                        "error": row["Error"],
                        "occurrences": int(row["Occurrences"]),
                    }
                )
    return sorted(out, key=lambda r: -r["occurrences"])


def read_locust_exceptions(prefix: Path) -> list[dict[str, Any]]:
    """Locust's ``<prefix>_exceptions.csv``: errors raised in the locustfile's own code
    (``on_start``, a task), with their count and message."""
    path = Path(f"{prefix}_exceptions.csv")
    out = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out.append({"count": int(row["Count"]), "message": row["Message"]})
    return sorted(out, key=lambda r: -r["count"])


def _num(text: str | None) -> float | None:
    if text in (None, "", "N/A"):
        return None
    try:
        return round(float(text), 2)
    except ValueError:
        return None
