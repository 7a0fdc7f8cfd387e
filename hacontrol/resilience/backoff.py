"""Backoff schedules and the AWS jitter formulas."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

BackoffKind = Literal["fixed", "linear", "exponential", "fibonacci"]
JitterKind = Literal["none", "full", "equal", "decorrelated"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number n (n = 0 after the first failed attempt), capped at `cap`.

    fixed: base; linear: base + step*n; exponential: base * multiplier**n;
    fibonacci: base * F(n+1) with F = 1, 1, 2, 3, 5, ...
    """

    kind: BackoffKind = "exponential"
    base: float = 0.1
    cap: float | None = 10.0
    multiplier: float = 2.0
    step: float | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or (self.cap is not None and self.cap < 0):
            raise ValueError("backoff base and cap must be >= 0")
        if self.kind not in ("fixed", "linear", "exponential", "fibonacci"):
            raise ValueError(f"unknown backoff kind {self.kind!r}")

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        """The same delay every time."""
        return cls("fixed", delay, None)

    @classmethod
    def linear(cls, base: float, step: float | None = None, cap: float | None = None) -> Backoff:
        """base, base+step, base+2*step, ... (step defaults to base)."""
        return cls("linear", base, cap, step=step)

    @classmethod
    def exponential(cls, base: float, multiplier: float = 2.0, cap: float | None = None) -> Backoff:
        """base, base*m, base*m**2, ..."""
        return cls("exponential", base, cap, multiplier=multiplier)

    @classmethod
    def fibonacci(cls, base: float, cap: float | None = None) -> Backoff:
        """base times 1, 1, 2, 3, 5, 8, ..."""
        return cls("fibonacci", base, cap)

    def delay(self, n: int) -> float:
        """Un-jittered, capped delay before retry number `n` (0-based)."""
        kind = self.kind
        if kind == "fixed":
            v = self.base
        elif kind == "linear":
            v = self.base + (self.base if self.step is None else self.step) * n
        elif kind == "exponential":
            # Stop growing once past the cap so huge n never overflows a float.
            v = self.base
            cap = self.cap
            for _ in range(n):
                v *= self.multiplier
                if cap is not None and v >= cap:
                    break
        else:
            a, b = 1, 1
            for _ in range(n):
                a, b = b, a + b
                if self.cap is not None and self.base * a >= self.cap:
                    break
            v = self.base * a
        cap = self.cap
        return v if cap is None or v < cap else cap


def jittered(kind: JitterKind, backoff: Backoff, n: int, prev: float, rng: random.Random) -> float:
    """The sleep before retry `n` under the AWS jitter formulas.

    full: U(0, v); equal: v/2 + U(0, v/2), with v = backoff.delay(n);
    decorrelated: min(cap, U(base, 3*prev)), prev being the previous sleep (base at first).
    """
    if kind == "decorrelated":
        v = rng.uniform(backoff.base, 3.0 * prev)
        cap = backoff.cap
        return v if cap is None or v < cap else cap
    v = backoff.delay(n)
    if kind == "none":
        return v
    if kind == "full":
        return rng.uniform(0.0, v)
    if kind == "equal":
        half = v / 2.0
        return half + rng.uniform(0.0, half)
    raise ValueError(f"unknown jitter {kind!r}")
