"""Operators, shared by static constant folding and run time (size-checked)."""

from __future__ import annotations

import ast
from typing import Any

from vpcli.sandbox.limits import Limits
from vpcli.sandbox.values import _LimitError, _NUMBER, _PRIMITIVE


# -----------------------------------------------------------------------------
# operators (shared by static constant folding and run time)
# -----------------------------------------------------------------------------

_BINARY_SYMBOLS = {ast.Add: '+', ast.Sub: '-', ast.Mult: '*', ast.Div: '/', ast.FloorDiv: '//',
                   ast.Mod: '%', ast.Pow: '**'}
_FORBIDDEN_BINARY = {ast.LShift: '<<', ast.RShift: '>>', ast.BitOr: '|', ast.BitXor: '^',
                     ast.BitAnd: '&', ast.MatMult: '@'}


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_size(value: Any, limits: Limits) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > limits.max_int_bits:
        raise _LimitError(f'integer result larger than {limits.max_int_bits} bits')
    if isinstance(value, str) and len(value) > limits.max_string_chars:
        raise _LimitError(f'text longer than {limits.max_string_chars} characters')
    if isinstance(value, (list, tuple)) and len(value) > limits.max_sequence_items:
        raise _LimitError(f'list longer than {limits.max_sequence_items} items')
    if isinstance(value, complex):
        raise _LimitError('result is a complex number')
    return value


def _binary(op: type, left: Any, right: Any, limits: Limits) -> Any:
    """Apply an arithmetic operator, refusing results beyond ``limits`` before computing."""
    symbol = _BINARY_SYMBOLS[op]
    if isinstance(left, _NUMBER) and isinstance(right, _NUMBER):
        if op is ast.Pow:
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                if right * max(1, left.bit_length() - 1) > limits.max_int_bits:
                    raise _LimitError(f'integer result larger than {limits.max_int_bits} bits '
                                      f'({left} ** {right})')
        if op is ast.Mult and isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > limits.max_int_bits + 1:
                raise _LimitError(f'integer result larger than {limits.max_int_bits} bits')
        try:
            result = {ast.Add: lambda: left + right, ast.Sub: lambda: left - right,
                      ast.Mult: lambda: left * right, ast.Div: lambda: left / right,
                      ast.FloorDiv: lambda: left // right, ast.Mod: lambda: left % right,
                      ast.Pow: lambda: left ** right}[op]()
        except ZeroDivisionError:
            raise ValueError('division by zero') from None
        except OverflowError:
            raise ValueError(f'numeric overflow in {symbol}') from None
        return _check_size(result, limits)
    sequence = (str, list, tuple)
    if op is ast.Add and isinstance(left, sequence) and type(left) is type(right):
        if len(left) + len(right) > (limits.max_string_chars if isinstance(left, str)
                                     else limits.max_sequence_items):
            raise _LimitError(f'{_type_name(left)} result too long')
        return left + right
    if op is ast.Mult and (isinstance(left, sequence) and isinstance(right, int)
                           or isinstance(right, sequence) and isinstance(left, int)):
        sequence_value, count = (left, right) if isinstance(left, sequence) else (right, left)
        bound = limits.max_string_chars if isinstance(sequence_value, str) \
            else limits.max_sequence_items
        if count > 0 and len(sequence_value) * count > bound:
            raise _LimitError(f'{_type_name(sequence_value)} result of '
                              f'{len(sequence_value)} x {count} items is longer than {bound}')
        return sequence_value * count
    if op is ast.Mod and isinstance(left, str):
        raise _LimitError('% formatting of text is not allowed; use an f-string')
    raise TypeError(f"unsupported operand types for {symbol}: '{_type_name(left)}' and "
                    f"'{_type_name(right)}'")


def _unary(op: type, operand: Any) -> Any:
    if op is ast.Not:
        return not _truth(operand)
    if not isinstance(operand, _NUMBER):
        raise TypeError(f"bad operand type for unary {'-' if op is ast.USub else '+'}: "
                        f"'{_type_name(operand)}'")
    return -operand if op is ast.USub else +operand


def _truth(value: Any) -> bool:
    """Truthiness without calling an arbitrary object's ``__bool__``/``__len__``."""
    if isinstance(value, (int, float, str, list, tuple, type(None))):
        return bool(value)
    return True


def _comparable(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_comparable(v) for v in value)
    return isinstance(value, _PRIMITIVE)


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if isinstance(op, ast.Is):
        return left is right
    if isinstance(op, ast.IsNot):
        return left is not right
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(right, (list, tuple, str)) or (isinstance(right, str)
                                                           and not isinstance(left, str)):
            raise TypeError(f"'in' needs a list, tuple or text on the right, not "
                            f"'{_type_name(right)}'")
        if isinstance(right, str):
            found = left in right
        else:  # identity for non-primitive items: never call an object's __eq__
            found = any((item is left) or (_comparable(item) and _comparable(left)
                                           and item == left) for item in right)
        return found if isinstance(op, ast.In) else not found
    if isinstance(op, (ast.Eq, ast.NotEq)):
        if _comparable(left) and _comparable(right):
            equal = left == right
        else:
            equal = left is right
        return equal if isinstance(op, ast.Eq) else not equal
    if not (_comparable(left) and _comparable(right)):
        raise TypeError(f"cannot order '{_type_name(left)}' and '{_type_name(right)}'")
    return {ast.Lt: lambda: left < right, ast.LtE: lambda: left <= right,
            ast.Gt: lambda: left > right, ast.GtE: lambda: left >= right}[type(op)]()
