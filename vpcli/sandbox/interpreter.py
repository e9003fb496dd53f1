"""The interpreter: :class:`Sandbox` evaluates validated nodes itself."""

from __future__ import annotations

import ast
import dataclasses
import math
import signal
import threading
import time
from typing import Any, Mapping, Sequence

from vpcli.errors import ProgramError, VoxelPromptError
from vpcli.sandbox.limits import DEFAULT_LIMITS, Limits
from vpcli.sandbox.operators import _binary, _compare, _truth, _type_name, _unary
from vpcli.sandbox.safe_builtins import SAFE_BUILTINS, _UNIT_KEEPING_BUILTINS
from vpcli.sandbox.steps import Step, StepRecord, normalize_code
from vpcli.sandbox.validation import _signed_number, validate_program, validate_step
from vpcli.sandbox.values import (Tracked, _LimitError, _NUMBER, _StepTimeout, _intrinsic_masks,
                                  _intrinsic_sources, _unit_of, union_masks)
from vpcli.volumes import Mask, Scan, union_sources, value_text


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
            plain = all(not i.sources and i.unit is None and i.items is None and not i.masks
                        for i in items)
            return Tracked(value, union_sources(*(i.sources for i in items)),
                           items=None if plain else tuple(items),
                           masks=union_masks(*(i.masks for i in items)))
        if isinstance(node, ast.BinOp):
            return self._arith(type(node.op), self._eval(node.left), self._eval(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand)
            try:
                result = _unary(type(node.op), operand.value)
            except TypeError as error:
                raise self._fail(str(error)) from None
            return Tracked(result, operand.sources,
                           None if isinstance(node.op, ast.Not) else operand.unit,
                           masks=operand.masks)
        if isinstance(node, ast.BoolOp):
            seen, masks = [], []
            for part in node.values:
                current = self._eval(part)
                seen.append(current.sources)
                masks.append(current.masks)
                if _truth(current.value) == isinstance(node.op, ast.Or):
                    break
            return Tracked(current.value, union_sources(*seen), current.unit,
                           masks=union_masks(*masks))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            sources, masks = [left.sources], [left.masks]
            result = True
            for op, comparator in zip(node.ops, node.comparators):
                right = self._eval(comparator)
                sources.append(right.sources)
                masks.append(right.masks)
                try:
                    result = _compare(op, left.value, right.value)
                except TypeError as error:
                    raise self._fail(str(error)) from None
                if not result:
                    break
                left = right
            return Tracked(result, union_sources(*sources), masks=union_masks(*masks))
        if isinstance(node, ast.IfExp):
            test = self._eval(node.test)
            chosen = self._eval(node.body if _truth(test.value) else node.orelse)
            return dataclasses.replace(chosen, sources=union_sources(test.sources, chosen.sources),
                                       masks=union_masks(test.masks, chosen.masks))
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            owner = self._eval(node.value)
            if not isinstance(owner.value, Scan):
                raise self._fail(f"'.{node.attr}' is only available on input scans, not on "
                                 f"{_type_name(owner.value)}")
            return Tracked(getattr(owner.value, node.attr), owner.sources, masks=owner.masks)
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
            return dataclasses.replace(item, sources=union_sources(item.sources, index.sources),
                                       masks=union_masks(item.masks, index.masks))
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
        return Tracked(result, union_sources(left.sources, right.sources), unit,
                       masks=union_masks(left.masks, right.masks))

    def _fstring(self, node: ast.JoinedStr) -> Tracked:
        pieces, sources, masks = [], [], []
        length = 0
        for part in node.values:
            if isinstance(part, ast.Constant):
                text = part.value
            else:
                value = self._eval(part.value)
                sources.append(value.sources)
                masks.append(value.masks)
                spec = ''.join(p.value for p in part.format_spec.values) \
                    if part.format_spec is not None else ''
                text = self._format(value.value, spec)
            length += len(text)
            if length > self.limits.max_string_chars:
                raise self._fail(f'too large: text longer than {self.limits.max_string_chars} '
                                 f'characters')
            pieces.append(text)
        return Tracked(''.join(pieces), union_sources(*sources), masks=union_masks(*masks))

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
        masks = union_masks(*(a.masks for a in everything),
                            *(_intrinsic_masks(a.value) for a in everything))
        values = [a.value for a in arguments]
        keyword_values = {k: v.value for k, v in keywords.items()}
        self._line = node.lineno
        if name in SAFE_BUILTINS and name not in self.functions:
            try:
                result = SAFE_BUILTINS[name](*values, **keyword_values)
            except (TypeError, ValueError, ArithmeticError) as error:
                raise self._fail(f'{name}(): {error}') from None
            unit = arguments[0].unit if arguments and name in _UNIT_KEEPING_BUILTINS else None
            return Tracked(result, sources, unit, masks=masks)

        entry = self.functions[name]
        try:
            if entry.needs_context:
                self.context.call_sources = sources
                self.context.call_masks = masks
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
                self.context.call_masks = ()
        self._check_time()
        return Tracked(result, union_sources(sources, _intrinsic_sources(result)),
                       _unit_of(entry.returns), masks=masks)


def _raise_timeout(signum, frame) -> None:
    raise _StepTimeout()
