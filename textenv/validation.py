"""Checks of config values, shared by every config of the package (bottom layer; imports nothing
of ours).

One rule throughout: a bool is not an integer or a number, and a numeric string (``"0.1"``) is
not a number either. Two strictnesses, kept apart on purpose:

* :func:`check_int` / :func:`check_real` accept numpy scalars too (env kwargs often come from
  numpy code), convert them to plain ``int`` / ``float`` and raise ``TypeError`` for a wrong type;
* :func:`is_int` / :func:`is_real` / :func:`is_finite` accept plain Python ``int`` / ``float``
  only: configs saved as JSON (run, training and agent configs) test with them and raise
  ``ValueError`` themselves, with their own range in the message.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_int", "check_real", "is_finite", "is_int", "is_real", "type_name"]


def type_name(value: Any) -> str:
    """The name of ``value``'s type, for error messages."""
    return type(value).__name__


def check_int(name: str, value: Any, minimum: int) -> int:
    """An integer ≥ ``minimum`` (numpy integers too; not a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type_name(value)})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any) -> float:
    """A finite real number (int or float, numpy scalars included; not a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type_name(value)})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def is_int(value: Any) -> bool:
    """A Python ``int`` that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A Python ``int`` or ``float`` (``nan`` and ``inf`` included) that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A finite Python ``int`` or ``float`` that is not a bool."""
    return is_real(value) and math.isfinite(value)
