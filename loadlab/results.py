"""The run folder and its ``run.json``: a versioned, documented record that is never overwritten.

``run.json`` is a public interface for CI scripts (see the README's "run.json" section). A run
folder is created once; ``run.json`` is rewritten atomically as the run advances, so a run stopped
at any point still holds a readable record with ``status: incomplete`` and the phase it reached.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RUN_JSON = "run.json"
RAW_PROFILE = "profile.raw.txt"  # py-spy's raw folded output: the source of truth of a run's profile


class RunFolderError(OSError):
    """The run folder cannot be created or written; the message says which and why."""


def new_run_dir(profiles_dir: Path, name: str, out: Path | None = None) -> Path:
    """Create the run folder: ``out`` if given (must not exist, or be empty), else
    ``profiles_dir/<timestamp>-<name>``, with a numeric suffix rather than reusing a folder."""
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if any(out.iterdir()):
                raise RunFolderError(f"--out {out} is not empty; pick a new folder")
            return out
        profiles_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            candidate = profiles_dir / (f"{stamp}-{name}" if n == 1 else f"{stamp}-{name}-{n}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
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


class UnknownSchemaError(ValueError):
    pass


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read a run's ``run.json``, refusing versions this loadlab does not know."""
    path = run_dir / RUN_JSON
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir} has no {RUN_JSON}: is it a loadlab run folder?") from None
    except json.JSONDecodeError as exc:
        raise UnknownSchemaError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnknownSchemaError(f"{path} has schema_version {version!r}; this loadlab reads version {SCHEMA_VERSION}")
    return data


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


def read_locust_stats(csv_prefix: Path) -> list[dict[str, Any]]:
    """Locust's ``<prefix>_stats.csv`` as run.json's ``stats``: one entry per endpoint and the
    ``Aggregated`` row, each with name, requests, failures, rps, p50_ms, p95_ms, p99_ms."""
    path = Path(f"{csv_prefix}_stats.csv")
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


def _num(text: str | None) -> float | None:
    if text in (None, "", "N/A"):
        return None
    try:
        return round(float(text), 2)
    except ValueError:
        return None
