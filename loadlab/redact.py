"""Keep secrets out of everything a run writes: the settings recorded in ``run.json`` and the files
of the run folder, Locust's reports included.

Two kinds of secret reach a run: a password in a URL (``--target-host http://user:pw@host``) and
a value in a ``LOADLAB_*`` variable whose name says it is one (``LOADLAB_API_TOKEN``). The recorded
settings carry ``***`` in their place; the run folder's files are scrubbed of their values once
the children that wrote them have stopped (Locust writes the host into its HTML report).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

MASK = "***"
# A variable named like this holds a secret whatever its value looks like.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|PWD|API_?KEY|PRIVATE|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)
# Shorter values would be scrubbed out of unrelated text ("pass" out of "passed"); a value that is
# a number or a word like "true" is a setting, not a secret, whatever its variable is called.
MIN_SECRET_LEN = 6
_NOT_SECRET = re.compile(r"^([\d.]+|true|false|yes|no|on|off|none|null)$", re.IGNORECASE)
# The files a run's children write, where a secret they were given can appear. loadlab's own
# records (run.json, the reports) are redacted by their structure instead, and never scrubbed as
# text: a replaced value there could be part of a number or a key.
SCRUBBED_FILES = ("locust*", "*.log", "thresholds.json")
# Files larger than this are left alone: py-spy's raw profile holds stacks, never settings.
MAX_SCRUB_BYTES = 64 * 2**20


def redact_url(url: str) -> str:
    """``http://user:pw@host/x`` → ``http://user:***@host/x``; any other text unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    userinfo = f"{user}:{MASK}" if parts.password is not None else MASK
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def url_secrets(url: str) -> list[str]:
    """The credentials in a URL (a password, or a token given as the user name alone)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if parts.password:
        return [parts.password]
    if parts.username and "@" in parts.netloc:
        return [parts.username]
    return []


def redact_setting(name: str, value: str, known: Iterable[str] = ()) -> str:
    """A setting's value as it may be recorded: masked if its name says secret (unless it is one
    of ``known``, loadlab's own), URL passwords out."""
    if SECRET_NAME.search(name) and value and name not in set(known):
        return MASK
    return redact_url(value)


def secrets_of(settings: Mapping[str, object], known: Iterable[str] = ()) -> list[str]:
    """Every secret value among ``settings`` (names to values), longest first. A name in ``known``
    (a setting loadlab defines, such as ``LOADLAB_THREAD_TOKENS``) is not a secret by its name."""
    known = set(known)
    found: set[str] = set()
    for name, value in settings.items():
        if not isinstance(value, str) or not value:
            continue
        if SECRET_NAME.search(name) and name not in known:
            found.add(value)
        found.update(url_secrets(value))
    return sorted((s for s in found if len(s) >= MIN_SECRET_LEN and not _NOT_SECRET.match(s)), key=len, reverse=True)


def _spellings(secret: str) -> set[str]:
    # As written in a URL, in HTML and in JSON: Locust's report embeds the host in all three.
    return {
        secret,
        quote(secret, safe=""),
        html.escape(secret),
        json.dumps(secret)[1:-1],
    }


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        for spelling in sorted(_spellings(secret), key=len, reverse=True):
            if spelling:
                text = text.replace(spelling, MASK)
    return text


def scrub_folder(folder: Path, secrets: list[str]) -> list[Path]:
    """Replace every secret in the files the run's children wrote under ``folder`` (Locust's
    outputs, the logs); return the files that held one."""
    if not secrets:
        return []
    changed = []
    candidates = {p for pattern in SCRUBBED_FILES for p in folder.rglob(pattern)}
    for path in sorted(p for p in candidates if p.is_file() and not p.is_symlink()):
        try:
            if path.stat().st_size > MAX_SCRUB_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        text = data.decode("utf-8", errors="surrogateescape")
        clean = scrub_text(text, secrets)
        if clean != text:
            tmp = path.with_name(f".{path.name}.scrub")
            tmp.write_bytes(clean.encode("utf-8", errors="surrogateescape"))
            tmp.replace(path)
            changed.append(path)
    return changed
