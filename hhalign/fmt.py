"""Numbers as people read them, formatted in one place: rates, rewards and their 95% intervals."""

from __future__ import annotations

from collections.abc import Sequence


def num(value: float | None, digits: int = 1, missing: str = "n/a") -> str:
    """``value`` with ``digits`` decimals, or ``missing``."""
    return missing if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    """A rate in percent: ``42.0%``."""
    return "n/a" if value is None else f"{value:.{digits}f}%"


def with_ci(value: float | None, ci: Sequence[float] | None = None, digits: int = 1, missing: str = "n/a") -> str:
    """``value [low, high]``; the interval is left out when there is none or it is undefined (``[None, None]``: every
    resample of a kappa was 0/0)."""
    if value is None:
        return missing
    text = f"{value:.{digits}f}"
    if not ci or any(end is None for end in ci):
        return text
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def signed_ci(value: float, ci: Sequence[float], digits: int = 2) -> str:
    """A difference with its interval, signs shown: ``+0.42 [-0.10, +0.95]``."""
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"
