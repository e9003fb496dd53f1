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

Modules: ``limits`` (size bounds, readable scan attributes), ``steps`` (``# step N``
program files), ``values`` (values with their sources), ``operators``, ``safe_builtins``,
``validation`` (the whitelist) and ``interpreter`` (:class:`Sandbox`).
"""

from __future__ import annotations

from vpcli.sandbox.interpreter import Sandbox
from vpcli.sandbox.limits import DEFAULT_LIMITS, Limits, SCAN_ATTRIBUTES
from vpcli.sandbox.safe_builtins import SAFE_BUILTINS
from vpcli.sandbox.steps import Step, StepRecord, format_program, normalize_code, split_program
from vpcli.sandbox.validation import validate_program, validate_step
from vpcli.sandbox.values import Tracked
from vpcli.volumes import value_text


__all__ = ['DEFAULT_LIMITS', 'Limits', 'Step', 'StepRecord', 'Sandbox', 'Tracked', 'split_program',
           'format_program', 'normalize_code', 'validate_program', 'validate_step', 'value_text',
           'SCAN_ATTRIBUTES', 'SAFE_BUILTINS']
