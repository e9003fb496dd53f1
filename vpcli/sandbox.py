"""Where a program runs: a validated Python subset, interpreted node by node.

Programs (written by the agent, or by a person for ``voxelprompt exec``) are short
straight-line Python: assignments, calls of registered library functions, arithmetic,
comparisons, literals, f-strings and tuple indexing (DESIGN.md §2, "Code the agent
writes"; the full rules are in ``docs/programs.md``).

Safety comes from construction, not from a restricted ``exec``: the program's AST is
checked against a whitelist before anything runs, and then *this module* evaluates the
checked nodes itself. Names resolve in the sandbox's own namespace (never Python's
globals or builtins), calls go only to functions of the library registry and a few
wrapped builtins, attribute access is limited to a few scan fields, and every
arithmetic result is size-checked before it is computed. Nothing of the host is
reachable because no code path hands a program a Python object's attributes.

Every value carries its data-flow sources (the input scans it derives from), so that
``output()`` can record which scans each number came from.

Time limit: each step has a wall-clock budget. On the main thread a ``SIGALRM`` timer
interrupts the step at the next Python bytecode after the budget is spent (this stops
library code written in Python, and torch code between operations); elsewhere, and for
a single native operation that runs longer, the interpreter checks the deadline after
every node and every library call and reports the step as over its limit.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import math
import re
import signal
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from vpcli.errors import BadInputError, ProgramError, RefusedError, VoxelPromptError
from vpcli.volumes import Mask, Scan, SourceRef, union_sources, value_text

__all__ = ['Limits', 'Step', 'StepRecord', 'Sandbox', 'Tracked', 'split_program',
           'format_program', 'normalize_code', 'validate_program', 'value_text', 'SCAN_ATTRIBUTES',
           'SAFE_BUILTINS']


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size bounds a program must stay within (checked before and while it runs).

    Attributes:
        max_source_chars: Longest program text (a φ table of 100k numbers fits).
        max_steps: Most steps in one program.
        max_statements_per_step: Most statements in one step.
        max_depth: Deepest expression nesting.
        max_literal_items: Most items in one list/tuple literal, nested items included
            (the φ tables ``PHI = [[[...]]]`` of a replayable script).
        max_sequence_items: Longest list/tuple a program may build.
        max_string_chars: Longest string a program may build.
        max_int_bits: Largest integer a program may build, in bits.
        max_round_digits: Largest ``ndigits`` for ``round``.
    """
    max_source_chars: int = 4_000_000
    max_steps: int = 500
    max_statements_per_step: int = 500
    max_depth: int = 60
    max_literal_items: int = 100_000
    max_sequence_items: int = 100_000
    max_string_chars: int = 100_000
    max_int_bits: int = 4096
    max_round_digits: int = 30


DEFAULT_LIMITS = Limits()

#: attributes a program may read, and only on input scans
SCAN_ATTRIBUTES = ('date', 'modality', 'session', 'name')

#: f-string format specs: alignment, sign, width (<= 3 digits), grouping, precision, type.
#: No nested fields, so a spec cannot reach an object or allocate without bound.
_FORMAT_SPEC = re.compile(r'^(?:[^{}\n]?[<>=^])?[+\- ]?z?#?0?(?:\d{1,3})?[,_]?(?:\.\d{1,2})?'
                          r'[bcdeEfFgGnosxX%]?$')

#: ``# step N`` marker lines that split a program file into steps
_STEP_MARKER = re.compile(r'^\s*#\s*step\s+(\d+)\s*$', re.IGNORECASE)


# -----------------------------------------------------------------------------
# steps and program files
# -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a program.

    Attributes:
        index: Step number, from 1 (the ``# step N`` marker of a program file).
        code: The step's source lines.
        first_line: Line of the step's first code line in its file (1 for agent steps).
        origin: Name of the file the step came from, or None for generated steps.
    """
    index: int
    code: str
    first_line: int = 1
    origin: str | None = None

    def where(self, line: int | None) -> str:
        """How messages name a line of this step (``prog.py line 7 (step 2)``)."""
        line = line or 1
        if self.origin:
            return f'{self.origin} line {self.first_line + line - 1} (step {self.index})'
        return f'step {self.index}, line {line}'


@dataclasses.dataclass
class StepRecord:
    """What running one step produced (for ``metrics.json`` and the agent loop).

    Attributes:
        step: The step that ran.
        seconds: Wall-clock time it took, in s.
        feedback: What ``read(...)`` calls of the step returned, in order.
    """
    step: Step
    seconds: float
    feedback: list = dataclasses.field(default_factory=list)


def split_program(text: str, origin: str | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> list[Step]:
    """Split a program file into steps at ``# step N`` comment lines (N from 1).

    A file without markers is one step. Comment and blank lines before the first marker
    (a header, as ``script.py`` files carry) belong to no step.

    Raises:
        BadInputError: code before the first marker, markers out of order, or a file
            too long; the message names the file and line.
    """
    name = origin or 'program'
    if len(text) > limits.max_source_chars:
        raise BadInputError(f'{name}: program is longer than {limits.max_source_chars} characters')
    lines = text.splitlines()
    markers = [(number, int(m.group(1))) for number, line in enumerate(lines, 1)
               if (m := _STEP_MARKER.match(line))]
    if not markers:
        return [_make_step(1, lines, 1, origin)]
    for number, line in enumerate(lines[:markers[0][0] - 1], 1):
        if line.strip() and not line.lstrip().startswith('#'):
            raise BadInputError(f'{name} line {number}: code before the first "# step 1" marker')
    steps = []
    for position, (line_number, step_number) in enumerate(markers):
        if step_number != position + 1:
            raise BadInputError(f'{name} line {line_number}: expected "# step {position + 1}", '
                                f'found "# step {step_number}" (steps are numbered 1, 2, ...)')
        end = markers[position + 1][0] - 1 if position + 1 < len(markers) else len(lines)
        steps.append(_make_step(step_number, lines[line_number:end], line_number + 1, origin))
    if len(steps) > limits.max_steps:
        raise BadInputError(f'{name}: more than {limits.max_steps} steps')
    return steps


def _make_step(index: int, lines: list[str], first_line: int, origin: str | None) -> Step:
    """A step from its lines, dropping leading and trailing blank lines."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return Step(index, '\n'.join(lines[start:end]), first_line + start, origin)


def normalize_code(code: str) -> str:
    """Step code as it is stored and written: no leading or trailing blank lines."""
    return _make_step(1, str(code).splitlines(), 1, None).code


def format_program(steps: Sequence[Step | str], header: Sequence[str] = ()) -> str:
    """Program text with ``# step N`` markers, re-runnable with ``voxelprompt exec``.

    Splitting the result with :func:`split_program` gives back the same step code.

    Args:
        steps: The steps that ran (or their code), in order.
        header: Comment lines to put first (without the leading ``#``).
    """
    lines = [f'# {" ".join(str(line).split())}'.rstrip() for line in header]
    text = '\n'.join(lines) + ('\n\n' if lines else '')
    blocks = [f'# step {index}\n{normalize_code(step.code if isinstance(step, Step) else step)}'
              for index, step in enumerate(steps, 1)]
    return text + '\n\n'.join(blocks) + '\n'


# -----------------------------------------------------------------------------
# values
# -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tracked:
    """A program value with the input scans it derives from.

    Attributes:
        value: The Python value.
        sources: Input scans it was computed from.
        unit: Its unit when known (from the library function that returned it).
        items: Per-item tracking for lists/tuples whose items differ in sources.
    """
    value: Any
    sources: tuple[SourceRef, ...] = ()
    unit: str | None = None
    items: tuple['Tracked', ...] | None = None

    def item(self, index: int) -> 'Tracked':
        """Tracking of one item of a list/tuple value."""
        if self.items is not None:
            return self.items[index]
        return Tracked(self.value[index], self.sources)


_NUMBER = (int, float)
_PRIMITIVE = (int, float, str, bool, type(None), dt.date)


def _intrinsic_sources(value: Any) -> tuple[SourceRef, ...]:
    """Sources a volume object carries itself."""
    if isinstance(value, (Scan, Mask)):
        return tuple(value.sources)
    return tuple(getattr(value, 'sources', ()) or ()) if hasattr(value, 'to_feedback') else ()


def _unit_of(returns: str) -> str | None:
    """The unit in a registry ``returns`` text: ``"float, mL"`` -> ``mL``."""
    if ',' not in returns:
        return None
    unit = returns.rsplit(',', 1)[1].strip()
    return unit if unit and len(unit) <= 24 else None


class _LimitError(Exception):
    """An operation would exceed a size limit (refused statically, failed at run time)."""


class _StepTimeout(BaseException):
    """Raised into a step when its time budget is spent.

    A ``BaseException`` so that library code catching ``Exception`` cannot swallow it.
    """


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


# -----------------------------------------------------------------------------
# validation
# -----------------------------------------------------------------------------

_STATEMENT_RULES = {
    ast.Import: 'imports are not allowed', ast.ImportFrom: 'imports are not allowed',
    ast.FunctionDef: 'def is not allowed (no function definitions)',
    ast.AsyncFunctionDef: 'def is not allowed (no function definitions)',
    ast.ClassDef: 'class is not allowed', ast.Return: 'return is not allowed',
    ast.For: 'loops are not allowed (for)', ast.AsyncFor: 'loops are not allowed (for)',
    ast.While: 'loops are not allowed (while)', ast.If: 'if statements are not allowed; use a '
    'conditional expression (a if condition else b)', ast.With: 'with is not allowed',
    ast.AsyncWith: 'with is not allowed', ast.Raise: 'raise is not allowed',
    ast.Try: 'try is not allowed', ast.Assert: 'assert is not allowed',
    ast.Delete: 'del is not allowed', ast.Global: 'global is not allowed',
    ast.Nonlocal: 'nonlocal is not allowed', ast.Break: 'break is not allowed',
    ast.Continue: 'continue is not allowed', ast.AnnAssign: 'annotated assignments are not allowed',
    ast.Match: 'match is not allowed',
}
if hasattr(ast, 'TryStar'):
    _STATEMENT_RULES[ast.TryStar] = 'try is not allowed'

_EXPRESSION_RULES = {
    ast.Lambda: 'lambda is not allowed', ast.ListComp: 'comprehensions are not allowed',
    ast.SetComp: 'comprehensions are not allowed', ast.DictComp: 'comprehensions are not allowed',
    ast.GeneratorExp: 'generator expressions are not allowed',
    ast.Starred: 'starred expressions (*x) are not allowed',
    ast.NamedExpr: 'assignment expressions (:=) are not allowed',
    ast.Yield: 'yield is not allowed', ast.YieldFrom: 'yield is not allowed',
    ast.Await: 'await is not allowed', ast.Dict: 'dict literals are not allowed',
    ast.Set: 'set literals are not allowed', ast.Slice: 'slices are not allowed; index with '
    'one integer',
}

_NOT_CONSTANT = object()


def _signed_number(node: ast.expr) -> int | float | None:
    """The value of ``-1.5`` / ``+2`` style literals (a UnaryOp on a number), else None."""
    if type(node) is ast.UnaryOp and type(node.operand) is ast.Constant \
            and type(node.operand.value) in (int, float) and type(node.op) in (ast.USub, ast.UAdd):
        value = node.operand.value
        if type(value) is int and value.bit_length() > DEFAULT_LIMITS.max_int_bits:
            return None  # let the normal checks refuse it
        return -value if type(node.op) is ast.USub else value
    return None


class _Validator:
    """Checks one step's AST against the rules; tracks the names it defines."""

    def __init__(self, step: Step, known: set[str], functions: Mapping[str, Any],
                 limits: Limits) -> None:
        self.step = step
        self.known = known
        self.functions = functions
        self.limits = limits
        self.folded: dict[int, Any] = {}

    def refuse(self, node: ast.AST | None, rule: str) -> RefusedError:
        line = getattr(node, 'lineno', None)
        snippet = ''
        if node is not None and line is not None:
            segment = ' '.join(self.source_start(node).split())
            if segment:
                snippet = f' [{segment[:60]}{"..." if len(segment) > 60 else ""}]'
        return RefusedError(f'{self.step.where(line)}: {rule}{snippet}')

    def source_start(self, node: ast.AST, chars: int = 80) -> str:
        """The first ``chars`` characters of a node's source (cheap on megabyte lines,
        unlike ``ast.get_source_segment``)."""
        lines = self.step.code.splitlines()
        if not 1 <= node.lineno <= len(lines):
            return ''
        encoded = lines[node.lineno - 1].encode('utf-8')
        end = node.end_col_offset if getattr(node, 'end_lineno', None) == node.lineno \
            else len(encoded)
        stop = min(end if end is not None else len(encoded), node.col_offset + 4 * chars)
        return encoded[node.col_offset:stop].decode('utf-8', errors='ignore')[:chars]

    def check(self) -> ast.Module:
        try:
            module = ast.parse(self.step.code, mode='exec')
        except SyntaxError as error:
            raise RefusedError(f'{self.step.where(error.lineno)}: syntax error: '
                               f'{error.msg}') from None
        except (ValueError, RecursionError, MemoryError) as error:
            raise RefusedError(f'{self.step.where(1)}: cannot be parsed '
                               f'({type(error).__name__}: {error})') from None
        if len(module.body) > self.limits.max_statements_per_step:
            raise self.refuse(module.body[self.limits.max_statements_per_step],
                              f'more than {self.limits.max_statements_per_step} statements in '
                              f'one step')
        for statement in module.body:
            self.statement(statement)
        return module

    # statements ----------------------------------------------------------------
    def statement(self, node: ast.stmt) -> None:
        rule = _STATEMENT_RULES.get(type(node))
        if rule:
            raise self.refuse(node, rule)
        if isinstance(node, ast.Assign):
            self.expression(node.value, 1)
            for target in node.targets:
                self.target(target)
        elif isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                raise self.refuse(node, 'augmented assignment only to a plain name')
            self.operator(node, node.op)
            self.name_load(node.target)
            self.expression(node.value, 1)
        elif isinstance(node, ast.Expr):
            self.expression(node.value, 1)
        elif isinstance(node, ast.Pass):
            pass
        else:
            raise self.refuse(node, f'{type(node).__name__} statements are not allowed')

    def target(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.identifier(node, node.id)
            if node.id in self.functions or node.id in SAFE_BUILTINS:
                raise self.refuse(node, f"cannot assign to '{node.id}': it is a function name")
            self.known.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            if len(node.elts) > 64:
                raise self.refuse(node, 'too many names to unpack into')
            for element in node.elts:
                if not isinstance(element, ast.Name):
                    raise self.refuse(element, 'unpack only into plain names')
                self.target(element)
        elif isinstance(node, ast.Starred):
            raise self.refuse(node, 'starred expressions (*x) are not allowed')
        elif isinstance(node, ast.Attribute):
            raise self.refuse(node, 'assigning to attributes is not allowed')
        elif isinstance(node, ast.Subscript):
            raise self.refuse(node, 'assigning to items is not allowed')
        else:
            raise self.refuse(node, 'can only assign to names')

    # expressions ---------------------------------------------------------------
    def identifier(self, node: ast.AST, name: str) -> None:
        if name.startswith('_'):
            rule = 'dunder names are not allowed' if name.startswith('__') \
                else "names starting with '_' are not allowed"
            raise self.refuse(node, f'{rule} ({name})')

    def name_load(self, node: ast.Name) -> None:
        self.identifier(node, node.id)
        if node.id in self.known:
            return
        if node.id in self.functions or node.id in SAFE_BUILTINS:
            raise self.refuse(node, f"'{node.id}' is a function: call it, e.g. {node.id}(...)")
        raise self.refuse(node, f"unknown name '{node.id}' (not an input scan or a variable "
                                f"assigned earlier)")

    def operator(self, node: ast.AST, op: ast.operator) -> None:
        if type(op) in _FORBIDDEN_BINARY:
            raise self.refuse(node, f"operator '{_FORBIDDEN_BINARY[type(op)]}' is not allowed")
        if type(op) not in _BINARY_SYMBOLS:
            raise self.refuse(node, f'operator {type(op).__name__} is not allowed')

    def expression(self, node: ast.expr, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise self.refuse(node, f'expression nested deeper than {self.limits.max_depth}')
        kind = type(node)
        rule = _EXPRESSION_RULES.get(kind, '')
        if rule:
            raise self.refuse(node, rule)
        if isinstance(node, ast.Constant):
            self.constant(node)
        elif isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                raise self.refuse(node, 'can only assign to names')
            self.name_load(node)
        elif isinstance(node, (ast.List, ast.Tuple)):
            if not isinstance(node.ctx, ast.Load):
                raise self.refuse(node, 'can only assign to names')
            self.literal(node, depth)
        elif isinstance(node, ast.BinOp):
            self.operator(node, node.op)
            if isinstance(node.op, ast.Mod) and (isinstance(node.left, ast.JoinedStr) or (
                    isinstance(node.left, ast.Constant) and isinstance(node.left.value, str))):
                raise self.refuse(node, '% formatting of text is not allowed; use an f-string')
            self.expression(node.left, depth + 1)
            self.expression(node.right, depth + 1)
            self.fold(node)
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Invert):
                raise self.refuse(node, "operator '~' is not allowed")
            self.expression(node.operand, depth + 1)
            self.fold(node)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.expression(value, depth + 1)
        elif isinstance(node, ast.Compare):
            self.expression(node.left, depth + 1)
            for value in node.comparators:
                self.expression(value, depth + 1)
        elif isinstance(node, ast.IfExp):
            for part in (node.test, node.body, node.orelse):
                self.expression(part, depth + 1)
        elif isinstance(node, ast.Call):
            self.call(node, depth)
        elif isinstance(node, ast.Attribute):
            self.identifier(node, node.attr)
            if node.attr not in SCAN_ATTRIBUTES:
                raise self.refuse(node, f"attribute '.{node.attr}' is not allowed (scans have "
                                        f"{', '.join('.' + a for a in SCAN_ATTRIBUTES)})")
            if not isinstance(node.ctx, ast.Load):
                raise self.refuse(node, 'assigning to attributes is not allowed')
            self.expression(node.value, depth + 1)
        elif isinstance(node, ast.Subscript):
            if not isinstance(node.ctx, ast.Load):
                raise self.refuse(node, 'assigning to items is not allowed')
            if isinstance(node.slice, ast.Slice):
                raise self.refuse(node, 'slices are not allowed; index with one integer')
            self.expression(node.value, depth + 1)
            self.expression(node.slice, depth + 1)
        elif isinstance(node, ast.JoinedStr):
            self.fstring(node, depth)
        else:
            raise self.refuse(node, f'{kind.__name__} expressions are not allowed')

    def constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return
        if isinstance(value, int):
            if value.bit_length() > self.limits.max_int_bits:
                raise self.refuse(node, f'integer literal larger than {self.limits.max_int_bits} '
                                        f'bits')
            return
        if isinstance(value, str):
            if len(value) > self.limits.max_string_chars:
                raise self.refuse(node, f'text literal longer than {self.limits.max_string_chars} '
                                        f'characters')
            return
        raise self.refuse(node, f'{_type_name(value)} literals are not allowed')

    def literal(self, node: ast.List | ast.Tuple, depth: int) -> None:
        """A list/tuple literal: bounded total size (φ tables are the largest)."""
        count = 0
        pending = [(node, depth)]
        while pending:
            current, level = pending.pop()
            if level > self.limits.max_depth:
                raise self.refuse(current, f'expression nested deeper than {self.limits.max_depth}')
            for element in current.elts:
                count += 1
                if count > self.limits.max_literal_items:
                    raise self.refuse(node, f'list literal with more than '
                                            f'{self.limits.max_literal_items} items')
                if isinstance(element, (ast.List, ast.Tuple)) and isinstance(element.ctx, ast.Load):
                    pending.append((element, level + 1))
                elif isinstance(element, ast.Constant):
                    self.constant(element)
                elif _signed_number(element) is not None:
                    pass
                else:
                    self.expression(element, level + 1)

    def call(self, node: ast.Call, depth: int) -> None:
        if not isinstance(node.func, ast.Name):
            what = 'a method' if isinstance(node.func, ast.Attribute) else 'an expression'
            raise self.refuse(node, f'only library functions can be called, by name (this calls '
                                    f'{what})')
        name = node.func.id
        self.identifier(node.func, name)
        if name in self.functions:
            signature = self.functions[name].signature
        elif name in SAFE_BUILTINS:
            signature = None
        else:
            raise self.refuse(node.func, f"unknown function '{name}' (not in the function "
                                         f"library; see `voxelprompt functions`)")
        for argument in node.args:
            if isinstance(argument, ast.Starred):
                raise self.refuse(argument, 'starred arguments (*x) are not allowed')
            self.expression(argument, depth + 1)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.refuse(keyword.value, 'keyword unpacking (**x) is not allowed')
            self.identifier(keyword, keyword.arg)
            self.expression(keyword.value, depth + 1)
        try:
            if signature is not None:
                signature.bind(*node.args, **{k.arg: k.value for k in node.keywords})
            elif node.keywords and not (name == 'round' and [k.arg for k in node.keywords]
                                        == ['ndigits']):
                raise TypeError(f'{name}() takes no keyword arguments')
        except TypeError as error:
            raise self.refuse(node, f'{name}(): {error}') from None

    def fstring(self, node: ast.JoinedStr, depth: int) -> None:
        for part in node.values:
            if isinstance(part, ast.Constant):
                continue
            if not isinstance(part, ast.FormattedValue):
                raise self.refuse(part, 'unsupported f-string part')
            if part.conversion != -1:
                raise self.refuse(part, 'f-string conversions (!r, !s, !a) are not allowed')
            if part.format_spec is not None:
                spec_parts = part.format_spec.values
                if not all(isinstance(p, ast.Constant) and isinstance(p.value, str)
                           for p in spec_parts):
                    raise self.refuse(part, 'nested or dynamic format specs are not allowed')
                spec = ''.join(p.value for p in spec_parts)
                if not _FORMAT_SPEC.match(spec):
                    raise self.refuse(part, f"format spec '{spec}' is not allowed (use e.g. "
                                            f"'.1f', '>8.2f', ',d', '.0%')")
            self.expression(part.value, depth + 1)

    def fold(self, node: ast.expr) -> Any:
        """Evaluate constant arithmetic now, so giant constants are refused before running."""
        key = id(node)
        if key in self.folded:
            return self.folded[key]
        value = _NOT_CONSTANT
        try:
            if isinstance(node, ast.Constant):
                value = node.value
            elif isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) <= 1000:
                items = [self.fold(e) for e in node.elts]
                if all(i is not _NOT_CONSTANT for i in items):
                    value = items if isinstance(node, ast.List) else tuple(items)
            elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Invert):
                operand = self.fold(node.operand)
                if operand is not _NOT_CONSTANT:
                    value = _unary(type(node.op), operand)
            elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY_SYMBOLS:
                left, right = self.fold(node.left), self.fold(node.right)
                if left is not _NOT_CONSTANT and right is not _NOT_CONSTANT:
                    value = _binary(type(node.op), left, right, self.limits)
        except _LimitError as error:
            raise self.refuse(node, f'too large: {error}') from None
        except (TypeError, ValueError, ArithmeticError):
            value = _NOT_CONSTANT  # a run-time error, reported when the step runs
        self.folded[key] = value
        return value


def validate_step(step: Step, known_names: set[str], functions: Mapping[str, Any],
                  limits: Limits = DEFAULT_LIMITS) -> ast.Module:
    """Check one step against the sandbox rules before it runs.

    Args:
        step: The step.
        known_names: Names defined before this step (input scans, earlier assignments);
            the names this step assigns are added to it.
        functions: Callable library functions by name (the registry).
        limits: Size bounds.

    Returns:
        The parsed, checked AST.

    Raises:
        RefusedError: one line naming the step, line and the rule broken.
    """
    if len(step.code) > limits.max_source_chars:
        raise RefusedError(f'{step.where(1)}: step longer than {limits.max_source_chars} '
                           f'characters')
    return _Validator(step, known_names, functions, limits).check()


def validate_program(steps: Sequence[Step], scan_names: Sequence[str],
                     functions: Mapping[str, Any] | None = None,
                     limits: Limits = DEFAULT_LIMITS) -> list[ast.Module]:
    """Check every step of a program, in order, before any of it runs.

    Raises:
        RefusedError: naming the first step and line that breaks a rule.
    """
    if functions is None:
        from vpcli.library.registry import registry
        functions = registry()
    if len(steps) > limits.max_steps:
        raise RefusedError(f'program has more than {limits.max_steps} steps')
    known = set(scan_names)
    return [validate_step(step, known, functions, limits) for step in steps]


# -----------------------------------------------------------------------------
# the interpreter
# -----------------------------------------------------------------------------

class Sandbox:
    """Runs program steps in one persistent namespace.

    Args:
        context: The run's state; its scans are bound as ``img0``, ``img1``, ...
        functions: Callable library functions by name (default: the whole registry).
        step_timeout_s: Wall-clock limit per step, in s (None: no limit).
        limits: Size bounds.

    Attributes:
        namespace: Program variables by name, with their tracking.
        records: One :class:`StepRecord` per step that ran.
        named_masks: Every mask the program assigned to a variable, with the step number
            (written as outputs by the runner; see ``docs/outputs.md``).
    """

    def __init__(self, context, *, functions: Mapping[str, Any] | None = None,
                 step_timeout_s: float | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        if functions is None:
            from vpcli.library.registry import registry
            functions = registry()
        self.context = context
        self.functions = dict(functions)
        self.step_timeout_s = step_timeout_s
        self.limits = limits
        self.namespace: dict[str, Tracked] = {
            scan.name: Tracked(scan, tuple(scan.sources)) for scan in context.scans}
        self.records: list[StepRecord] = []
        self.named_masks: list[tuple[Mask, int]] = []
        self._step: Step | None = None
        self._line: int | None = None
        self._deadline = math.inf

    # public ----------------------------------------------------------------------
    def validate(self, step: Step | str) -> ast.Module:
        """Check a step against the rules and the current namespace (nothing runs)."""
        step = self._as_step(step)
        return validate_step(step, set(self.namespace), self.functions, self.limits)

    def run_program(self, steps: Sequence[Step]) -> list[StepRecord]:
        """Validate every step first, then run them in order."""
        modules = validate_program(steps, list(self.namespace), self.functions, self.limits)
        return [self._run(step, module) for step, module in zip(steps, modules)]

    def run_step(self, step: Step | str) -> StepRecord:
        """Validate and run one step (the agent loop calls this once per generated step).

        Returns:
            The step's record: its time and what ``read`` returned.

        Raises:
            RefusedError: the step breaks a rule (nothing of it ran).
            ProgramError: a statement failed or the step ran over its time limit.
            BadInputError: a library function found an input unusable.
        """
        step = self._as_step(step)
        return self._run(step, self.validate(step))

    def value(self, name: str) -> Any:
        """The current value of a program variable."""
        return self.namespace[name].value

    # running ----------------------------------------------------------------------
    def _as_step(self, step: Step | str) -> Step:
        if isinstance(step, Step):
            return step
        return Step(len(self.records) + 1, normalize_code(step))

    def _run(self, step: Step, module: ast.Module) -> StepRecord:
        self._step, self._line = step, None
        self.context.step = step.index - 1
        self.context.feedback = []
        started = time.monotonic()
        timeout = self.step_timeout_s
        self._deadline = started + timeout if timeout else math.inf
        alarm = bool(timeout) and threading.current_thread() is threading.main_thread() \
            and hasattr(signal, 'setitimer')
        previous_handler = previous_timer = None
        if alarm:
            previous_handler = signal.signal(signal.SIGALRM, _raise_timeout)
            previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            try:
                for statement in module.body:
                    self._line = statement.lineno
                    self._statement(statement)
            finally:
                if alarm:  # disarm first, so no alarm can land in the cleanup below
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except _StepTimeout:
            raise ProgramError(f'{step.where(self._line)}: step exceeded its time limit of '
                               f'{timeout:g} s') from None
        finally:
            if alarm:
                signal.signal(signal.SIGALRM, previous_handler)
                if previous_timer and previous_timer[0] > 0:  # give back someone else's timer
                    remaining = max(previous_timer[0] - (time.monotonic() - started), 1e-3)
                    signal.setitimer(signal.ITIMER_REAL, remaining, previous_timer[1])
            self._deadline = math.inf
        record = StepRecord(step, time.monotonic() - started, list(self.context.feedback))
        self.records.append(record)
        return record

    def _fail(self, message: str, error_class: type[VoxelPromptError] = ProgramError):
        return error_class(f'{self._step.where(self._line)}: {message}')

    def _check_time(self) -> None:
        if time.monotonic() > self._deadline:
            raise _StepTimeout()

    def _statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            value = self._eval(node.value)
            for target in node.targets:
                self._bind(target, value)
        elif isinstance(node, ast.AugAssign):
            current = self.namespace[node.target.id]
            self._bind(node.target, self._arith(type(node.op), current, self._eval(node.value)))
        elif isinstance(node, ast.Expr):
            self._eval(node.value)
        # ast.Pass: nothing to do; nothing else passes validation

    def _bind(self, target: ast.expr, value: Tracked) -> None:
        if isinstance(target, ast.Name):
            self.namespace[target.id] = value
            if isinstance(value.value, Mask) and not any(m is value.value
                                                         for m, _ in self.named_masks):
                self.named_masks.append((value.value, self._step.index))
            return
        names = target.elts
        if not isinstance(value.value, (list, tuple)):
            raise self._fail(f'cannot unpack {_type_name(value.value)} into {len(names)} names')
        if len(value.value) != len(names):
            raise self._fail(f'cannot unpack {len(value.value)} values into {len(names)} names')
        for index, name in enumerate(names):
            self._bind(name, value.item(index))

    def _eval(self, node: ast.expr) -> Tracked:
        self._check_time()
        if isinstance(node, ast.Constant):
            return Tracked(node.value)
        if isinstance(node, ast.Name):
            if node.id not in self.namespace:
                raise self._fail(f"unknown name '{node.id}'")
            return self.namespace[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            values = [_signed_number(element) if type(element) is not ast.Constant else element.value
                      for element in node.elts]
            if all(type(element) is ast.Constant or value is not None  # φ-table fast path
                   for element, value in zip(node.elts, values)):
                return Tracked(values if isinstance(node, ast.List) else tuple(values))
            items = [self._eval(element) for element in node.elts]
            values = [item.value for item in items]
            value = values if isinstance(node, ast.List) else tuple(values)
            plain = all(not i.sources and i.unit is None and i.items is None for i in items)
            return Tracked(value, union_sources(*(i.sources for i in items)),
                           items=None if plain else tuple(items))
        if isinstance(node, ast.BinOp):
            return self._arith(type(node.op), self._eval(node.left), self._eval(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand)
            try:
                result = _unary(type(node.op), operand.value)
            except TypeError as error:
                raise self._fail(str(error)) from None
            return Tracked(result, operand.sources,
                           None if isinstance(node.op, ast.Not) else operand.unit)
        if isinstance(node, ast.BoolOp):
            seen = []
            for part in node.values:
                current = self._eval(part)
                seen.append(current.sources)
                if _truth(current.value) == isinstance(node.op, ast.Or):
                    break
            return Tracked(current.value, union_sources(*seen), current.unit)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            sources = [left.sources]
            result = True
            for op, comparator in zip(node.ops, node.comparators):
                right = self._eval(comparator)
                sources.append(right.sources)
                try:
                    result = _compare(op, left.value, right.value)
                except TypeError as error:
                    raise self._fail(str(error)) from None
                if not result:
                    break
                left = right
            return Tracked(result, union_sources(*sources))
        if isinstance(node, ast.IfExp):
            test = self._eval(node.test)
            chosen = self._eval(node.body if _truth(test.value) else node.orelse)
            return dataclasses.replace(chosen, sources=union_sources(test.sources, chosen.sources))
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            owner = self._eval(node.value)
            if not isinstance(owner.value, Scan):
                raise self._fail(f"'.{node.attr}' is only available on input scans, not on "
                                 f"{_type_name(owner.value)}")
            return Tracked(getattr(owner.value, node.attr), owner.sources)
        if isinstance(node, ast.Subscript):
            container, index = self._eval(node.value), self._eval(node.slice)
            if not isinstance(container.value, (list, tuple)):
                raise self._fail(f'only lists and tuples can be indexed, not '
                                 f'{_type_name(container.value)}')
            if isinstance(index.value, bool) or not isinstance(index.value, int):
                raise self._fail(f'index must be an integer, not {_type_name(index.value)}')
            if not -len(container.value) <= index.value < len(container.value):
                raise self._fail(f'index {index.value} out of range for {len(container.value)} '
                                 f'items')
            item = container.item(index.value)
            return dataclasses.replace(item, sources=union_sources(item.sources, index.sources))
        if isinstance(node, ast.JoinedStr):
            return self._fstring(node)
        raise self._fail(f'{type(node).__name__} is not allowed')  # unreachable after validation

    def _arith(self, op: type, left: Tracked, right: Tracked) -> Tracked:
        try:
            result = _binary(op, left.value, right.value, self.limits)
        except _LimitError as error:
            raise self._fail(f'too large: {error}') from None
        except (TypeError, ValueError) as error:
            raise self._fail(str(error)) from None
        unit = left.unit if op in (ast.Add, ast.Sub) and left.unit == right.unit else None
        if op in (ast.Mult, ast.Div) and (left.unit is None) != (right.unit is None) \
                and isinstance(left.value, _NUMBER) and isinstance(right.value, _NUMBER):
            unit = left.unit or right.unit if op is ast.Mult or right.unit is None else None
        return Tracked(result, union_sources(left.sources, right.sources), unit)

    def _fstring(self, node: ast.JoinedStr) -> Tracked:
        pieces, sources = [], []
        length = 0
        for part in node.values:
            if isinstance(part, ast.Constant):
                text = part.value
            else:
                value = self._eval(part.value)
                sources.append(value.sources)
                spec = ''.join(p.value for p in part.format_spec.values) \
                    if part.format_spec is not None else ''
                text = self._format(value.value, spec)
            length += len(text)
            if length > self.limits.max_string_chars:
                raise self._fail(f'too large: text longer than {self.limits.max_string_chars} '
                                 f'characters')
            pieces.append(text)
        return Tracked(''.join(pieces), union_sources(*sources))

    def _format(self, value: Any, spec: str) -> str:
        if not spec:
            return value_text(value)
        if not isinstance(value, (int, float, str)):
            raise self._fail(f"format spec '{spec}' applies to numbers and text, not "
                             f"{_type_name(value)}")
        try:
            return format(value, spec)
        except (ValueError, TypeError) as error:
            raise self._fail(f"cannot format {_type_name(value)} with '{spec}': {error}") from None

    def _call(self, node: ast.Call) -> Tracked:
        name = node.func.id
        arguments = [self._eval(a) for a in node.args]
        keywords = {k.arg: self._eval(k.value) for k in node.keywords}
        everything = arguments + list(keywords.values())
        sources = union_sources(*(a.sources for a in everything),
                                *(_intrinsic_sources(a.value) for a in everything))
        values = [a.value for a in arguments]
        keyword_values = {k: v.value for k, v in keywords.items()}
        self._line = node.lineno
        if name in SAFE_BUILTINS and name not in self.functions:
            try:
                result = SAFE_BUILTINS[name](*values, **keyword_values)
            except (TypeError, ValueError, ArithmeticError) as error:
                raise self._fail(f'{name}(): {error}') from None
            unit = arguments[0].unit if arguments and name in _UNIT_KEEPING_BUILTINS else None
            return Tracked(result, sources, unit)

        entry = self.functions[name]
        try:
            if entry.needs_context:
                self.context.call_sources = sources
                # units of the arguments, in order, for `read` (see docs/programs.md)
                self.context.call_units = tuple(a.unit for a in everything)
                result = entry.func(self.context, *values, **keyword_values)
            else:
                result = entry.func(*values, **keyword_values)
        except VoxelPromptError as error:
            raise self._fail(str(error), type(error)) from None
        except (RecursionError, MemoryError) as error:
            raise self._fail(f'{name}() failed: {type(error).__name__}') from None
        except Exception as error:  # noqa: BLE001 - any library failure fails the step
            message = str(error).splitlines()[0] if str(error) else ''
            raise self._fail(f'{name}() failed: {type(error).__name__}'
                             f'{": " + message if message else ""}') from None
        finally:
            if entry.needs_context:
                self.context.call_sources = ()
        self._check_time()
        return Tracked(result, union_sources(sources, _intrinsic_sources(result)),
                       _unit_of(entry.returns))


def _raise_timeout(signum, frame) -> None:
    raise _StepTimeout()
