"""The few builtins a program may call, wrapped: type-checked and size-bounded."""

from __future__ import annotations

import math
from typing import Any, Callable

from vpcli.sandbox.limits import DEFAULT_LIMITS
from vpcli.sandbox.operators import _type_name
from vpcli.sandbox.values import _NUMBER
from vpcli.volumes import value_text


# -----------------------------------------------------------------------------
# safe builtins
# -----------------------------------------------------------------------------

def _number(value: Any, function: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise TypeError(f'{function}() needs a number, not {_type_name(value)}')
    return value


def _builtin_round(number, ndigits=None):
    """round(number, ndigits=None)"""
    _number(number, 'round')
    if ndigits is not None:
        if isinstance(ndigits, bool) or not isinstance(ndigits, int):
            raise TypeError('round() ndigits must be an integer')
        if abs(ndigits) > DEFAULT_LIMITS.max_round_digits:
            raise ValueError(f'round() ndigits must be within ±{DEFAULT_LIMITS.max_round_digits}')
        return round(number, ndigits)
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f'cannot round {number}')
    return round(number)


def _builtin_abs(number):
    """abs(number)"""
    return abs(_number(number, 'abs'))


def _min_max(function: str, args: tuple) -> list:
    values = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    if not values:
        raise ValueError(f'{function}() of nothing')
    if not (all(isinstance(v, _NUMBER) for v in values) or all(isinstance(v, str) for v in values)):
        raise TypeError(f'{function}() needs numbers (or texts)')
    return values


def _builtin_min(*values):
    """min(a, b, ...) or min(sequence)"""
    return min(_min_max('min', values))


def _builtin_max(*values):
    """max(a, b, ...) or max(sequence)"""
    return max(_min_max('max', values))


def _builtin_len(sequence):
    """len(text_or_sequence)"""
    if not isinstance(sequence, (str, list, tuple)):
        raise TypeError(f'len() needs text, a list or a tuple, not {_type_name(sequence)}')
    return len(sequence)


def _builtin_str(value=''):
    """str(value)"""
    text = value_text(value)
    if len(text) > DEFAULT_LIMITS.max_string_chars:
        raise ValueError('text too long')
    return text


def _builtin_float(value=0.0):
    """float(value)"""
    if not isinstance(value, (int, float, str)):
        raise TypeError(f'float() needs a number or text, not {_type_name(value)}')
    return float(value)


def _builtin_int(value=0):
    """int(value)"""
    if not isinstance(value, (int, float, str)):
        raise TypeError(f'int() needs a number or text, not {_type_name(value)}')
    try:
        return int(value)
    except OverflowError:
        raise ValueError(f'cannot convert {value} to an integer') from None


#: the few builtins a program may call (wrapped: type-checked, size-bounded)
SAFE_BUILTINS: dict[str, Callable] = {
    'round': _builtin_round, 'abs': _builtin_abs, 'min': _builtin_min, 'max': _builtin_max,
    'len': _builtin_len, 'str': _builtin_str, 'float': _builtin_float, 'int': _builtin_int,
}

#: builtins whose result keeps the unit of their (first) argument
_UNIT_KEEPING_BUILTINS = {'round', 'abs', 'min', 'max', 'float'}
