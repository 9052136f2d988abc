"""Settings are read from LOADLAB_* env vars and refused, with a one-line reason, when wrong."""

from pathlib import Path

import pytest

from target_app.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.thread_tokens, s.stall_ms, s.pool_size) == (40, 100.0, 4)
    assert s.db_path == Path(".data/target_app.sqlite3")


def test_values_from_env() -> None:
    s = Settings.from_env(
        {
            "LOADLAB_THREAD_TOKENS": "5",
            "LOADLAB_DATA_DIR": "/tmp/x",
            "LOADLAB_UPSTREAM_URL": "http://127.0.0.1:9/",
        }
    )
    assert s.thread_tokens == 5
    assert s.db_path == Path("/tmp/x/target_app.sqlite3")
    assert s.upstream_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LOADLAB_THREAD_TOKENS": "abc"}, "LOADLAB_THREAD_TOKENS must be an integer from 1"),
        ({"LOADLAB_THREAD_TOKENS": "0"}, "LOADLAB_THREAD_TOKENS must be an integer from 1"),
        ({"LOADLAB_STALL_MS": "-5"}, "LOADLAB_STALL_MS must be a number from 1"),
        ({"LOADLAB_UPSTREAM_URL": "localhost:8001"}, "LOADLAB_UPSTREAM_URL must be an http://"),
        ({"LOADLAB_POOL_TIMEOUT_MS": "1.5"}, "LOADLAB_POOL_TIMEOUT_MS must be an integer"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value)
