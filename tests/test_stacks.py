"""Stack analysis on raw profiles recorded from real runs of the target app (tests/data/).

io-blocking: 5 users on /io/blocking-sleep for 2 s; io-threadpool: the same on /io/threadpool-sleep.
Both recorded by `loadlab profile` (py-spy 0.4.3, --native, uvloop, Python 3.11).
"""

import json
from pathlib import Path

import pytest

from loadlab.analysis.attribution import analyse_profile
from loadlab.analysis.stacks import (
    Frame,
    ProfileFormatError,
    Role,
    SampleKind,
    asgiref_shared_threads,
    classify_sample,
    has_native_frames,
    is_library_file,
    parse_frame,
    parse_raw,
    read_raw,
)

DATA = Path(__file__).parent / "data"
ROUTES = DATA / "target-app.routes.json"


def test_frames_python_and_native() -> None:
    assert parse_frame("blocking_sleep (/app/target_app/routes/io.py:33)") == Frame(
        "blocking_sleep", "/app/target_app/routes/io.py", 33
    )
    native = parse_frame("run_forever (/project/uvloop/loop.c:33192)")
    assert native.native and native.line == 33192
    assert parse_frame("0x7fb8989278ec (/usr/lib/x86_64-linux-gnu/libc.so.6)").native


def test_command_line_with_semicolons_is_one_process() -> None:
    line = (
        'process 1:"python -m uvicorn a:app";process 7:"python -c from x import main;main(18)";'
        "thread (7): MainThread;main (<string>:1) 3"
    )
    profile = parse_raw([line])
    (thread,) = profile.threads.values()
    assert (thread.key.pid, thread.parent_pid, thread.samples) == (7, 1, 3)


def test_thread_roles_on_the_blocking_profile() -> None:
    profile = read_raw(DATA / "io-blocking.raw.txt.gz")
    roles = {t.role for t in profile.threads.values()}
    assert Role.EVENT_LOOP in roles and Role.POOL_CHILD in roles
    loops = [t for t in profile.threads.values() if t.role is Role.EVENT_LOOP]
    assert len(loops) == 1 and loops[0].name == "MainThread"


def test_blocking_handler_is_named_on_the_loop_thread() -> None:
    analysis = analyse_profile(read_raw(DATA / "io-blocking.raw.txt.gz"), routes_file=ROUTES)
    loop = analysis["loop"]
    top = loop["blockers"][0]
    assert top["function"] == "blocking_sleep"
    assert top["route"] == "/io/blocking-sleep"
    assert top["kind"] == "wait"  # time.sleep: clock_nanosleep at the native leaf
    assert top["file"].endswith("target_app/routes/io.py")
    assert top["share"] > 0.5
    assert loop["busy_share"] >= top["share"]
    assert analysis["threadpool"]["workers_seen"] == 0


def test_threadpool_handler_runs_on_workers_not_the_loop() -> None:
    analysis = analyse_profile(read_raw(DATA / "io-threadpool.raw.txt.gz"), routes_file=ROUTES)
    assert analysis["loop"]["busy_share"] < 0.2
    assert all(b["function"] != "threadpool_sleep" for b in analysis["loop"]["blockers"])
    pool = analysis["threadpool"]
    assert pool["workers_seen"] >= 5
    assert pool["by_function"][0]["function"] == "threadpool_sleep"
    assert pool["average_busy_workers"] > 1


def test_analysis_is_deterministic() -> None:
    a = analyse_profile(read_raw(DATA / "io-blocking.raw.txt.gz"), routes_file=ROUTES)
    b = analyse_profile(read_raw(DATA / "io-blocking.raw.txt.gz"), routes_file=ROUTES)
    assert a == b


def test_classification_without_native_frames_is_unknown() -> None:
    frames = (
        Frame("Runner.run", "/usr/lib/python3.11/asyncio/runners.py", 118),
        Frame("blocking_sleep", "/app/io.py", 33),
    )
    assert classify_sample(frames, has_native=False) is SampleKind.UNKNOWN
    assert classify_sample((*frames, Frame("clock_nanosleep", "libc.so.6", None, True)), True) is SampleKind.WAIT
    assert classify_sample((*frames, Frame("burn", "/app/x.py", 3)), True) is SampleKind.CPU


def test_a_few_garbled_frames_do_not_make_a_profile_native() -> None:
    # A non-pausing py-spy read a thread's stack while it changed: one frame came out as
    # "http_version (asgi:-16054015)", not a Python file. Taken for --native, it turned every loop
    # sample into computing, and a time.sleep blocker was offered to a process pool.
    head = 'process 7:"python -m uvicorn app:app";'
    loop = head + "thread (0x1): MainThread;Runner.run (/usr/lib/python3.11/asyncio/runners.py:118);"
    raw = [
        loop + "blocking_sleep (/app/io.py:33) 500",
        head + "thread (0x2): loadlab-stall-watchdog;http_version (asgi:-16054015);normpath (<frozen posixpath>:394) 5",
    ]
    assert not has_native_frames(parse_raw(raw))
    assert has_native_frames(read_raw(DATA / "io-blocking.raw.txt.gz"))  # recorded with --native
    assert not has_native_frames(read_raw(DATA / "io-blocking-nonative.raw.txt.gz"))


def test_library_files() -> None:
    assert is_library_file("/venv/lib/python3.11/site-packages/starlette/routing.py")
    assert is_library_file("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/runners.py")
    assert is_library_file("/elsewhere/checkout/loadlab/instrument.py")
    assert not is_library_file("/home/me/loadlab/target_app/routes/io.py")
    assert not is_library_file("/srv/app/main.py")


@pytest.mark.parametrize("text", ["no count here", "thread (1): Main;f (a.py:1) 3", 'process 1:"x";f (a.py:1) 3'])
def test_malformed_profiles_are_refused_with_the_line(text: str) -> None:
    with pytest.raises(ProfileFormatError, match=r"profile:1:"):
        parse_raw([text])


def test_a_recorded_mixed_service_is_attributed_by_place_and_kind() -> None:
    # tests/apps/shop.py under 12 users for 6 s (`loadlab profile --app shop:app`, default flags):
    # its profile, its app map (routes.json) and its loop sampler's counts, as recorded.
    samples = json.loads((DATA / "shop-mixed.loop_samples.json").read_text())
    analysis = analyse_profile(
        read_raw(DATA / "shop-mixed.raw.txt.gz"), routes_file=DATA / "shop-mixed.routes.json", loop_samples=samples
    )
    found = {b["function"]: b for b in analysis["loop"]["blockers"]}
    expected = {
        "RequestTimer.__call__": ("wait", "middleware", None),
        "risk_score": ("cpu", "middleware", False),
        "verify_token": ("cpu", "dependency", True),
        "export_catalog": ("cpu", "handler", False),
        "db_session": ("wait", "dependency", None),
        "send_welcome_mail": ("wait", "background", None),
    }
    for function, (kind, place, gil_released) in expected.items():
        b = found[function]
        assert (b["kind"], b["place"]) == (kind, place), b
        if gil_released is not None:
            assert b["gil_released"] is gil_released, b
    assert found["verify_token"]["routes"] == ["/orders"]
    assert found["send_welcome_mail"]["routes"] == ["/signup"]
    assert len(found["RequestTimer.__call__"]["routes"]) == 5


# Stacks as py-spy wrote them in real runs of examples/django (asgiref 3.13) and examples/quart.
_PY = "/usr/lib/python3.11"
_WORKER = (
    f"Thread._bootstrap ({_PY}/threading.py:1002);Thread.run ({_PY}/threading.py:982);"
    f"_worker ({_PY}/concurrent/futures/thread.py:83)"
)
_ASGIREF = "/venv/lib/python3.11/site-packages/asgiref/sync.py"


def test_executor_threads_get_the_role_of_their_pool() -> None:
    head = 'process 9:"python -m uvicorn mysite:application"'
    quart = 'process 8:"python -m uvicorn app:app"'
    lines = [
        f"{head};thread (1): MainThread;Runner.run ({_PY}/asyncio/runners.py:118) 5",
        # A Django def view in asgiref's executor, under a stale name the OS thread id kept.
        f"{head};thread (2): Thread-167 (join);{_WORKER};_WorkItem.run ({_PY}/concurrent/futures/thread.py:58);"
        f"SyncToAsync.thread_handler ({_ASGIREF}:635);sync_report (/app/mysite.py:38) 2",
        f"{quart};thread (3): asyncio_0;{_WORKER};sync_report (/app/app.py:30) 4",  # Quart's run_sync
        f"{quart};thread (4): uvloop_1;{_WORKER} 4",  # uvloop's default executor, idle
        f"{head};thread (5): ThreadPoolExecutor-40_0;{_WORKER} 1",  # a per-request executor, idle
        f"{head};thread (6): loadlab-stall-watchdog;Thread.run ({_PY}/threading.py:982) 5",
        # An executor thread that got the id of an exited thread, and py-spy kept the old name.
        f"{quart};thread (7): loadlab-gil-probe;{_WORKER};sync_report (/app/app.py:30) 4",
    ]
    roles = {t.key.tid: t.role for t in parse_raw(lines).threads.values()}
    assert roles == {
        1: Role.EVENT_LOOP,
        2: Role.ASGIREF_EXECUTOR,
        3: Role.LOOP_EXECUTOR,
        4: Role.LOOP_EXECUTOR,
        5: Role.EXECUTOR,
        6: Role.OTHER,
        7: Role.LOOP_EXECUTOR,
    }


def test_asgiref_work_all_on_one_thread_is_the_shared_thread() -> None:
    call = f"{_WORKER};SyncToAsync.thread_handler ({_ASGIREF}:635);orm_query (/app/app.py:9)"
    shared = [f'process 3:"uvicorn app:app";thread (31): ThreadPoolExecutor-0_0;{call} 40']
    per_request = [
        f'process 4:"uvicorn mysite:application";thread ({t}): ThreadPoolExecutor-{t}_0;{call} 8' for t in range(5)
    ]
    found = asgiref_shared_threads(parse_raw(shared + per_request))
    assert {pid: t.key.tid for pid, t in found.items()} == {3: 31}
