"""The raw profile as a speedscope file (https://www.speedscope.app, "Open" the file): one sampled
profile per thread, named by role, so the event loop and the workers can be browsed separately."""

from __future__ import annotations

from typing import Any

from loadlab.analysis.stacks import Frame, Profile, Role, ThreadKey
from loadlab.render.flamegraph import short_path

SCHEMA = "https://www.speedscope.app/file-format-schema.json"
# Thread order in speedscope: the loop, then the threads that run sync code (each framework's
# pool), the process-pool children, the rest.
_ROLE_ORDER = {
    Role.EVENT_LOOP: 0, Role.ANYIO_WORKER: 1, Role.ASGIREF_EXECUTOR: 1, Role.LOOP_EXECUTOR: 1, Role.EXECUTOR: 1,
    Role.POOL_CHILD: 2, Role.OTHER: 3,
}  # fmt: skip


def to_speedscope(profile: Profile, name: str) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    index: dict[Frame, int] = {}

    def frame_id(frame: Frame) -> int:
        i = index.get(frame)
        if i is None:
            i = index[frame] = len(frames)
            entry: dict[str, Any] = {"name": frame.name, "file": short_path(frame.file)}
            if frame.line is not None:
                entry["line"] = frame.line
            frames.append(entry)
        return i

    per_thread: dict[ThreadKey, tuple[list[list[int]], list[int]]] = {}
    for stack in profile.stacks:
        samples, weights = per_thread.setdefault(stack.thread, ([], []))
        samples.append([frame_id(f) for f in stack.frames])
        weights.append(stack.count)

    ordered = sorted(per_thread, key=lambda k: (_ROLE_ORDER[profile.threads[k].role], k.pid, k.tid))
    profiles = []
    for key in ordered:
        samples, weights = per_thread[key]
        profiles.append(
            {
                "type": "sampled",
                "name": profile.threads[key].label,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        )
    return {
        "$schema": SCHEMA,
        "name": name,
        "exporter": "loadlab",
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": profiles,
    }
