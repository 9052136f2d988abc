"""Pure helpers of the benchmark: spreads, paired ratios, the interleaved order, a synthetic profile.

No I/O and no processes here, so ``tests/test_bench.py`` can check them in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loadlab.analysis.compare import Spread as BaseSpread


@dataclass(frozen=True)
class Spread(BaseSpread):
    """Median and range of a few repeats (loadlab's comparison's), as the table prints them."""

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}

    def text(self, digits: int = 2, unit: str = "", percent: bool = False) -> str:
        """``0.97 (0.95–0.98)``; with ``percent`` the values are shares shown as ``2.1%``."""

        def fmt(x: float) -> str:
            if percent:
                return f"{x * 100:.{digits}f}%"
            return f"{x:,.{digits}f}{unit}"

        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(self.low)}–{fmt(self.high)})"


def interleaved(labels: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """The measuring order ``A B A B …`` (``A B C A B C …`` for three): every variant once per
    round, so drift of the machine spreads over all of them instead of favouring one.
    Returns ``(round, label)`` pairs."""
    if repeats < 1 or not labels:
        raise ValueError("need at least one label and one repeat")
    return [(r, label) for r in range(repeats) for label in labels]


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``b[i] / a[i]`` for each round: a pair measured back to back shares the machine's state."""
    if len(a) != len(b):
        raise ValueError(f"unpaired: {len(a)} against {len(b)}")
    return [y / x for x, y in zip(a, b, strict=True) if x > 0]


def hop_cost_us(rps_async: float, rps_sync: float) -> float:
    """Extra time per request of the ``def`` route, in µs: at one connection the extra latency, at
    saturation (server on one core) the extra CPU time per request."""
    return (1.0 / rps_sync - 1.0 / rps_async) * 1e6


_PY_LINE = re.compile(r"(\.pyw?:|>:)(\d+)\)$")  # file.py:12 or <frozen importlib._bootstrap>:12


def synthesize_raw(lines: Sequence[str], samples: int, variants: int) -> list[str]:
    """A raw py-spy profile of exactly ``samples`` samples built from recorded ``lines``.

    Each recorded stack appears ``variants`` times, the innermost Python frame's line number shifted
    in each copy (as a longer run visits more lines of the same functions), so the number of
    distinct stacks grows as it would; counts keep their recorded proportions."""
    parsed: list[tuple[str, int]] = []
    for line in lines:
        body, _, count = line.rstrip("\n").rpartition(" ")
        if body and count.isdigit():
            parsed.append((body, int(count)))
    if not parsed or samples < 1 or variants < 1:
        raise ValueError("need recorded stacks, samples >= 1 and variants >= 1")
    weight = sum(c for _, c in parsed) * variants
    if samples < len(parsed) * variants:
        raise ValueError("fewer samples than distinct stacks")
    stacks = [_shift_innermost_line(stack, v) for v in range(variants) for stack, _ in parsed]
    exact = [recorded * samples / weight for _ in range(variants) for _, recorded in parsed]
    # Largest remainders: floor every share (at least 1), then hand the samples still missing to
    # the shares that lost the most by rounding down, so the total is exact.
    shares = [max(1, int(x)) for x in exact]
    missing = samples - sum(shares)
    order = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: max(0, missing)]:
        shares[i] += 1
    biggest = sorted(range(len(shares)), key=lambda i: shares[i], reverse=True)
    for i in biggest[: max(0, -missing)]:
        shares[i] -= 1
    return [f"{stack} {share}" for stack, share in zip(stacks, shares, strict=True)]


def _shift_innermost_line(body: str, shift: int) -> str:
    if shift == 0:
        return body
    parts = body.split(";")
    for i in range(len(parts) - 1, -1, -1):
        m = _PY_LINE.search(parts[i])
        if m:
            line = int(m.group(2)) + 10_000 * shift
            parts[i] = parts[i][: m.start()] + f"{m.group(1)}{line})"
            break
    return ";".join(parts)


def total_samples(lines: Iterable[str]) -> int:
    return sum(int(line.rpartition(" ")[2]) for line in lines if line.strip())
