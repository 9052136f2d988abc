"""``python -m target_app``: the upstream stub and the target app, on 127.0.0.1 (``make serve``).

Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import os
import sys

from loadlab.processes import LOOPBACK, ProcessError, free_port, upstream_stub
from target_app.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m target_app", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="port of the target app (default 8000)")
    parser.add_argument("--upstream-port", type=int, default=0, help="port of the upstream stub (default: free)")
    args = parser.parse_args(argv)
    import uvicorn

    try:
        Settings.from_env()
        with upstream_stub(port=args.upstream_port or free_port()) as (_, upstream_url):
            os.environ["LOADLAB_UPSTREAM_URL"] = upstream_url
            print(f"upstream stub on {upstream_url}; target app on http://{LOOPBACK}:{args.port}", flush=True)
            uvicorn.run("target_app.main:create_app", factory=True, host=LOOPBACK, port=args.port)
    except (SettingsError, ProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
