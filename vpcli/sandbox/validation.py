"""Validation: the whitelist every statement and expression is checked against."""

from __future__ import annotations

import ast
from typing import Any, Mapping, Sequence

from vpcli.errors import RefusedError
from vpcli.sandbox.limits import DEFAULT_LIMITS, Limits, SCAN_ATTRIBUTES, _FORMAT_SPEC
from vpcli.sandbox.operators import _BINARY_SYMBOLS, _FORBIDDEN_BINARY, _binary, _type_name, _unary
from vpcli.sandbox.safe_builtins import SAFE_BUILTINS
from vpcli.sandbox.steps import Step
from vpcli.sandbox.values import _LimitError


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
