"""ABA routing-number check digit (weights 3, 7, 1)."""

from __future__ import annotations

_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7)


def check_digit(first8: str) -> int:
    """The ninth digit of a routing number whose first eight are ``first8``."""
    assert len(first8) == 8 and first8.isdigit()
    total = sum(int(d) * w for d, w in zip(first8, _WEIGHTS, strict=True))
    return (10 - total % 10) % 10


def is_valid_routing(routing: str) -> bool:
    return (len(routing) == 9 and routing.isascii() and routing.isdigit()
            and check_digit(routing[:8]) == int(routing[8]))
