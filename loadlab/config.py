"""Settings of a profiling run: one frozen object, built from CLI flags or ``LOADLAB_*`` env vars,
validated once, up front, with an error that names what to change."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadlab.redact import redact_setting, redact_url, secrets_of
from loadlab.results import CLAIM_FILE

DEMO_APP = "target_app.main:app"
LOOPBACK = "127.0.0.1"
SCENARIOS = ("io", "cpu", "trivial", "deps", "db", "upstream", "files", "stream", "background")
DEFAULT_VARIANTS: dict[str, tuple[str, ...]] = {
    # Each scenario's variants, one after another under the same load, are the default run;
    # io's (the default scenario) is the default demonstration. Every name is a Locust tag that
    # only that variant's task carries in loadtests/<scenario>_routes.py.
    # Each io task carries its route's name as a tag of its own (family tags such as "blocking"
    # cover several routes), so each variant runs exactly one route.
    "io": ("blocking-sleep", "threadpool-sleep", "offload-sleep", "async-sleep", "helper-sleep"),
    "cpu": ("async", "threadpool", "process"),
    "trivial": ("async", "sync"),
    "deps": ("async", "sync", "mixed", "pool"),
    "db": ("blocking", "threadpool", "async"),
    "upstream": ("blocking", "threadpool", "async"),
    "files": ("blocking", "async"),
    "stream": ("blocking", "sync", "async"),
    "background": ("blocking", "sync"),
}
# Each numeric flag's accepted range: the CLI's click types and validated() read the same table.
BOUNDS: dict[str, tuple[float, float]] = {
    "--users": (1, 10_000),
    "--spawn-rate": (0.1, 10_000),
    "--duration": (1, 3600),
    "--workers": (1, 64),
    "--locust-processes": (1, 64),
    "--expect-workers": (0, 1000),
    "--master-port": (1, 65535),
    "--workers-wait": (1, 3600),
    "--rate": (1, 1000),
    "--fail-ratio": (0, 1),
}
_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def checkout_root() -> Path | None:
    """The loadlab checkout that holds the demo (``target_app/``, ``loadtests/``): the one this
    loadlab runs from (an editable install), else the current folder; None for an installed
    loadlab used elsewhere (the wheel ships ``loadlab`` alone)."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "target_app").is_dir() and (root / "loadtests").is_dir():
            return root
    return None


def demo_path(*parts: str) -> Path:
    """A path inside the checkout's demo, relative when the checkout is the current folder."""
    path = (checkout_root() or Path.cwd()).joinpath(*parts)
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def with_checkout_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the checkout appended to ``PYTHONPATH``, so the demo app and its locustfiles
    import from a child started anywhere. Appended: a project's own packages (the current folder,
    its own PYTHONPATH) still come first."""
    root = checkout_root()
    if root is not None:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(root) not in parts:
            env["PYTHONPATH"] = os.pathsep.join([*parts, str(root)])
    return env


class ConfigError(ValueError):
    """A setting cannot be used; the message is one line naming the flag and what it accepts."""


@dataclass(frozen=True)
class ProfileConfig:
    """Everything one ``loadlab profile`` run needs. Cheap to build; :meth:`validated` checks it."""

    app: str = DEMO_APP
    factory: bool = False
    scenario: str = "io"
    locustfile: Path | None = None  # default: loadtests/<scenario>_routes.py
    variants: tuple[str, ...] = ()  # each runs on its own server with Locust's ``-T <variant>``
    tags: tuple[str, ...] = ()
    users: int = 20
    spawn_rate: float = 20.0
    duration: float = 8.0
    workers: int = 1
    server: str = "uvicorn"  # or "gunicorn" (with the uvicorn-worker package's worker class)
    locust_processes: int = 1  # Locust's --processes: several generator processes, merged stats
    loop: str = "auto"  # uvicorn's --loop: auto (uvloop when installed), asyncio or uvloop
    rate: int = 100
    native: bool = False
    nonblocking: bool = False
    # The loop's stacks by the app's own sampler, py-spy slower and not pausing (loadlab.recording);
    # False: py-spy pauses the server's process at --rate, the loop included (--loop-by-pyspy).
    loop_by_app: bool = True
    # With the loop by the app: py-spy attaches only once a thread other than the loop runs
    # (loadlab.recording.ThreadWatch); False: from the server's start (--pyspy-from-start).
    pyspy_on_demand: bool = True
    profile: bool = True
    instrument: bool = True
    out: Path | None = None
    profiles_dir: Path = Path("profiles")
    health_path: str = "/health"
    bind: str = LOOPBACK  # where the server listens; anything else is explicit and warned about
    target_host: str | None = None  # load this host instead of starting a server (no profile)
    allow_remote: bool = False  # let --target-host be a non-loopback address
    ready_timeout: float = 60.0
    fail_ratio: float = 0.01  # failed/total requests above this make a run "doubtful"
    # Locust workers started elsewhere (`locust --worker --master-host …`): the master waits for them.
    expect_workers: int = 0
    master_bind: str = LOOPBACK
    master_port: int = 5557
    workers_wait: float = 60.0  # how long the master waits for them to connect
    # A `loadlab agent` on the app's host starts and profiles the server there.
    agent: str | None = None
    agent_token_file: Path | None = None

    @property
    def names_demo_package(self) -> bool:
        return self.app.split(":", 1)[0].split(".")[0] == DEMO_APP.split(".")[0]

    @property
    def is_demo_app(self) -> bool:
        """The app is the demo: ``target_app`` of a loadlab checkout, as the server imports it (the
        current folder first), not a project's own package of that name (tests/test_packaging.py)."""
        root = checkout_root()
        if not self.names_demo_package or root is None or not (root / "loadlab").is_dir():
            return False  # no checkout, or a project with target_app/ and loadtests/ of its own
        return Path.cwd().resolve() == root.resolve() or not Path("target_app").exists()

    @property
    def resolved_locustfile(self) -> Path:
        return self.locustfile or demo_path("loadtests", f"{self.scenario}_routes.py")

    @property
    def resolved_variants(self) -> tuple[str, ...]:
        """The variants to run: given ones, else the demonstration's when nothing narrows it."""
        if self.variants:
            return self.variants
        if self.is_demo_app and not self.tags and self.locustfile is None:
            return DEFAULT_VARIANTS.get(self.scenario, ())
        return ()

    def validated(self) -> ProfileConfig:
        """Return self if every field is usable; raise :class:`ConfigError` naming the first bad one."""
        if not _APP_SPEC.match(self.app):
            raise ConfigError(f"--app must be MODULE:ATTRIBUTE, like mypkg.main:app; got {self.app!r}")
        if self.names_demo_package and not self.is_demo_app and not self.target_host:
            # The demo asked for (the defaults) or a target_app the server cannot import: the demo is
            # not in an installed loadlab. A project's own target_app, with its locustfile, is its app.
            asks_for_demo = self.app == DEMO_APP and self.locustfile is None
            if asks_for_demo or not (Path("target_app").exists() or importlib.util.find_spec("target_app")):
                raise ConfigError(
                    "--app: the demo app (target_app) is only in a checkout of loadlab; run from the checkout, "
                    "or pass --app MODULE:ATTR and --locustfile for your own app"
                )
        if self.scenario not in SCENARIOS and self.locustfile is None:
            raise ConfigError(f"--scenario must be one of {', '.join(SCENARIOS)}; got {self.scenario!r}")
        if not self.resolved_locustfile.is_file():
            raise ConfigError(f"--locustfile: no such file: {self.resolved_locustfile}")
        _bounded("--users", self.users)
        _bounded("--spawn-rate", self.spawn_rate)
        _bounded("--duration", self.duration)
        _bounded("--workers", self.workers)
        _bounded("--locust-processes", self.locust_processes)
        if self.server not in ("uvicorn", "gunicorn"):
            raise ConfigError(f"--server must be uvicorn or gunicorn; got {self.server!r}")
        if self.server == "gunicorn" and self.loop != "auto":
            raise ConfigError("--loop applies to --server uvicorn only; gunicorn's uvicorn worker picks its own")
        _bounded("--expect-workers", self.expect_workers)
        _bounded("--master-port", self.master_port)
        _bounded("--workers-wait", self.workers_wait)
        if self.expect_workers and self.locust_processes > 1:
            raise ConfigError("--expect-workers and --locust-processes both make Locust a master; use one of them")
        if self.expect_workers:
            check_bind(self.master_bind, "--master-bind")
        _bounded("--rate", self.rate)
        _bounded("--fail-ratio", self.fail_ratio)
        check_bind(self.bind)
        if self.target_host is not None:
            _check_target_host(self.target_host, self.allow_remote)
        if self.agent is not None:
            if self.target_host is not None:
                raise ConfigError("--agent starts the server on its host; --target-host loads one: use one of them")
            _check_target_host(self.agent, self.allow_remote, "--agent")
            if self.agent_token_file is None or not self.agent_token_file.is_file():
                raise ConfigError("--agent needs --agent-token-file, a file holding the agent's token")
        if not self.health_path.startswith("/"):
            raise ConfigError(f"--health-path must start with '/'; got {self.health_path!r}")
        if self.out is not None and self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            if (self.out / CLAIM_FILE).exists():
                raise ConfigError(f"--out {self.out} is already used by another run; pick a new folder")
            raise ConfigError(f"--out {self.out} already exists and is not an empty folder; pick a new one")
        for v in self.variants:
            if not re.fullmatch(r"[\w-]+", v):
                raise ConfigError(f"--variants takes names of Locust tags (letters, digits, - and _); got {v!r}")
        return self

    def for_variant(self, variant: str) -> ProfileConfig:
        """The config of one variant's run: its tag selects the variant's tasks in the locustfile."""
        return replace(self, variants=(variant,), tags=(variant,))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        data["locustfile"] = str(self.resolved_locustfile)
        if self.target_host:
            data["target_host"] = redact_url(self.target_host)
        return data


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (by name resolution)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind(host: str, flag: str = "--bind") -> None:
    """The server can listen on ``host``: an address of this machine (a hostname resolving to one)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ConfigError(
            f"{flag} {host!r} is not an address or a host name this machine knows; try 127.0.0.1"
        ) from None
    family, _, _, _, address = infos[0]
    if family != socket.AF_INET:
        raise ConfigError(f"{flag} {host}: only IPv4 addresses are supported; use 127.0.0.1 or 0.0.0.0")
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"{flag} {host} is not an address of this machine ({exc.strerror}); use 127.0.0.1 or one of its own"
        ) from None


def _check_target_host(url: str, allow_remote: bool, flag: str = "--target-host") -> None:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ConfigError(f"{flag} has a bad port: {redact_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag} must be an http:// or https:// URL; got {redact_url(url)!r}")
    if not allow_remote and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{flag} {parts.hostname} is not a loopback address: loadlab only loads hosts you name "
            "on purpose; add --allow-remote if this one is yours to load"
        )


def _bounded(flag: str, value: float) -> None:
    lo, hi = BOUNDS[flag]
    if not lo <= value <= hi:
        raise ConfigError(f"{flag} must be from {lo:g} to {hi:g}; got {value:g}")


# Every ``LOADLAB_*`` variable loadlab itself defines: the CLI's flags, the target app's settings,
# the scenarios' parameters and the smoke budgets. Only these are recorded in ``run.json``; any
# other (a ``LOADLAB_API_TOKEN`` of the user's app, say) is left out, not even named.
KNOWN_ENV = frozenset(
    "LOADLAB_" + name
    for name in (
        # loadlab profile's flags
        "APP FACTORY SCENARIO LOCUSTFILE VARIANTS TAGS USERS SPAWN_RATE DURATION WORKERS SERVER "
        "LOCUST_PROCESSES LOOP RATE NATIVE NONBLOCKING LOOP_BY_APP PYSPY_ON_DEMAND NO_PROFILE NO_INSTRUMENT BIND "
        "TARGET_HOST "
        "ALLOW_REMOTE HEALTH_PATH OUT PROFILES_DIR FAIL_RATIO PYSPY EXPECT_WORKERS MASTER_BIND MASTER_PORT "
        "WORKERS_WAIT AGENT AGENT_TOKEN_FILE "
        # the target app and the instrumentation
        "THREAD_TOKENS PROCESS_WORKERS UPSTREAM_URL UPSTREAM_TIMEOUT_S DB_PATH DATA_DIR STALL_MS "
        "POOL_SIZE POOL_TIMEOUT_MS DEBUG_ALLOW LOOP_SAMPLE_HZ LOOP_STACKS_HZ "
        # the scenarios' parameters and load shapes
        "HOST MS WORK ROWS KB CHUNKS WAIT_MS CANARY_RPS SHAPE STEP_USERS STEP_SECONDS ARRIVAL_RATE "
        # the smoke budgets
        "P95_MS P99_MS ENDPOINT_BUDGETS LOOP_LAG_P99_MS MAX_GENERATOR_CPU THRESHOLDS_OUT"
    ).split()
)


def loadlab_env() -> dict[str, str]:
    """The ``LOADLAB_*`` settings of this process that loadlab defines: the only environment a run
    records, with secrets masked (a password in a URL, a variable named like a token)."""
    return {k: redact_setting(k, v, KNOWN_ENV) for k, v in sorted(os.environ.items()) if k in KNOWN_ENV}


def run_secrets(config: ProfileConfig | None = None) -> list[str]:
    """The secret values a run must not write down: from every ``LOADLAB_*`` variable (known or
    not: the server and Locust inherit them all) and from the config's URLs."""
    settings: dict[str, object] = {k: v for k, v in os.environ.items() if k.startswith("LOADLAB_")}
    if config is not None and config.target_host:
        settings["--target-host"] = config.target_host
    return secrets_of(settings, KNOWN_ENV)
