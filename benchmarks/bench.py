"""``python -m benchmarks.bench`` (``make bench``): the harness's accuracy, overhead and headroom.

Writes ``benchmarks/results/<timestamp>.json`` (every raw measurement, with CPU and machine state)
and ``<timestamp>.md`` (the table the README quotes). Nothing here is a test: no timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._items import ITEMS, Context, Row
from benchmarks._measure import REPO, Pinning, QuietGate, wait_for_low_load, wrk_binary
from benchmarks._render import markdown
from loadlab.config import loadlab_env
from loadlab.results import machine, versions

SCHEMA_VERSION = 1
RESULTS = REPO / "benchmarks" / "results"
WRK_ITEMS = {2, 3, 4, 5}


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loadlab bench", description=__doc__)
    p.add_argument("--items", default="1,2,3,4,5,6,7,8", help="which items, e.g. 2,3 (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of each paired comparison (default 3, at least 3)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds of load per measurement (default 6)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and the table go")
    p.add_argument(
        "--wait-budget", type=float, default=150.0, help="most seconds to wait, in all, for a quiet machine (150)"
    )
    p.add_argument("--no-install", action="store_true", help="do not try `apt-get install wrk` when it is missing")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, Locust CSVs, profiles)")
    p.add_argument(
        "--arms",
        default="",
        help="item 2: only the arms whose label starts with one of these, comma-separated (e.g. 'default,the app')",
    )
    args = p.parse_args(argv)
    try:
        args.items = sorted({int(x) for x in args.items.split(",") if x.strip()})
    except ValueError:
        p.error(f"--items takes numbers from 1 to 8 separated by commas; got {args.items!r}")
    if not args.items or not set(args.items) <= set(ITEMS):
        p.error("--items takes numbers from 1 to 8")
    if args.repeats < 1 or not 1 <= args.duration <= 60:
        p.error("--repeats must be ≥ 1 (the method asks ≥ 3) and --duration from 1 to 60 s")
    return args


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM (and SIGINT where a background job ignores it) stops the bench like Ctrl-C: the
    # context managers stop every child by PID and the figures gathered so far are written.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    os.chdir(REPO)
    start = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # The loadlab settings in the environment change what is measured (the loop sampler, say).
    settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in loadlab_env().items())
    command = (settings + " " if settings else "") + "loadlab bench"
    command += (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    _progress(f"make bench {stamp}: items {args.items}, {args.repeats} repeats, {args.duration:g} s each")
    load = wait_for_low_load(0.8, min(args.wait_budget, 60.0))
    _progress(f"load average at start {load['loadavg_1m_at_start']} (waited {load['waited_s']} s)")
    wrk, wrk_status = (None, "not needed") if not set(args.items) & WRK_ITEMS else wrk_binary(not args.no_install)
    _progress(f"wrk: {wrk_status}")
    work_dir = Path(tempfile.mkdtemp(prefix="loadlab-bench-"))
    pin = Pinning.detect()
    _progress(f"pinning: {pin.reason}")
    ctx = Context(
        pin=pin,
        work_dir=work_dir,
        gate=QuietGate(budget_s=args.wait_budget),
        wrk=wrk,
        wrk_status=wrk_status,
        repeats=args.repeats,
        duration=args.duration,
        env={"LOADLAB_DATA_DIR": str(work_dir / "data")},
        progress=_progress,
        arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()) or None,
    )
    rows: list[Row] = []
    errors: dict[str, str] = {}
    try:
        for number in args.items:
            try:
                rows += ITEMS[number](ctx)
            except Exception as exc:  # one broken item must not lose the others' figures
                errors[str(number)] = f"{type(exc).__name__}: {exc}"
                rows.append(Row(f"{number}. (failed)", "", "", "not measured", False, f"FAILED: {exc}"))
                _progress(f"item {number} failed: {exc}")
    finally:
        result = _result(args, stamp, command, start, load, pin, wrk_status, ctx, rows, errors)
        args.out.mkdir(parents=True, exist_ok=True)
        json_path = args.out / f"{stamp}.json"
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        md_path = args.out / f"{stamp}.md"
        md_path.write_text(markdown(result), encoding="utf-8")
        if args.keep:
            _progress(f"work folder kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(md_path.read_text(encoding="utf-8"))
    _progress(f"wrote {json_path} and {md_path} in {(time.monotonic() - start) / 60:.1f} min")
    return 1 if errors else 0


def _result(
    args: argparse.Namespace,
    stamp: str,
    command: str,
    start: float,
    load: dict[str, Any],
    pin: Pinning,
    wrk_status: str,
    ctx: Context,
    rows: list[Row],
    errors: dict[str, str],
) -> dict[str, Any]:
    gate = ctx.gate
    busy = [g for g in gate.log if not g["quiet"]]
    hygiene = f"Waited {gate.waited_s:.0f} s in all for a quiet machine"
    hygiene += f"; {len(busy)} measurement(s) started while the machine was busy." if busy else "; it was quiet."
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "bench",
        "timestamp": stamp,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "settings": {"items": args.items, "repeats": args.repeats, "duration_s": args.duration},
        "machine": machine(),
        "versions": versions(),
        "pinning": pin.to_dict(),
        "wrk": wrk_status,
        "load": load,
        "hygiene": {"waited_s": round(gate.waited_s, 1), "busy_starts": len(busy), "gate_log": gate.log},
        "hygiene_text": hygiene,
        "rows": [r.to_dict() for r in rows],
        "errors": errors,
        "raw": ctx.raw,
        "wall_s": round(time.monotonic() - start, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
