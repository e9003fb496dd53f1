"""Target programs k*: text in the library's language, written step by step.

A program is a list of steps; each step is a few statements (assignments of calls to
registered functions, ``output``/``answer``/``save`` calls) and is rendered after a
``# step N`` comment line, the sandbox's step separator. Calls use bare function names
and no loops. The ``phi=`` arguments of ``encode``/``segment`` are left out: the model
fills them in at run time (``<MOD>`` tokens).
"""

from __future__ import annotations

import dataclasses
import re


def variable_name(text: str, taken: set[str] | None = None) -> str:
    """A readable Python identifier for a target text (``left frontal lobe`` -> ``left_frontal_lobe``).

    Args:
        text: Target words.
        taken: Names already used in the program; a numeric suffix keeps the name unique.
    """
    name = re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_') or 'roi'
    if name[0].isdigit():
        name = 'roi_' + name
    if len(name) > 40:
        name = name[:40].rstrip('_')
    if taken is not None:
        base, index = name, 2
        while name in taken:
            name, index = f'{base}_{index}', index + 1
        taken.add(name)
    return name


def literal(value) -> str:
    """A Python literal for a string or number argument."""
    if isinstance(value, str):
        return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


@dataclasses.dataclass
class Program:
    """A target program under construction.

    Use :meth:`step` to start a step and :meth:`add` to append statements to it.
    """
    steps: list[list[str]] = dataclasses.field(default_factory=list)
    names: set[str] = dataclasses.field(default_factory=set)

    def step(self) -> 'Program':
        """Start a new step."""
        self.steps.append([])
        return self

    def add(self, statement: str) -> 'Program':
        """Append a statement to the current step."""
        if not self.steps:
            self.step()
        self.steps[-1].append(statement)
        return self

    def name(self, text: str) -> str:
        """Reserve a variable name for ``text``."""
        return variable_name(text, self.names)

    def text(self) -> str:
        """The program with ``# step N`` separators, ending in a newline."""
        lines = []
        for index, statements in enumerate(s for s in self.steps if s):
            lines.append(f'# step {index + 1}')
            lines.extend(statements)
        return '\n'.join(lines) + '\n'


def call(function: str, *arguments) -> str:
    """``function(arg, ...)`` with string/number literals quoted and names as given.

    Arguments that are :class:`Name` are written bare; everything else as a literal.
    """
    return f'{function}({", ".join(a.name if isinstance(a, Name) else literal(a) for a in arguments)})'


@dataclasses.dataclass(frozen=True)
class Name:
    """A variable reference in :func:`call` arguments."""
    name: str

    def __str__(self) -> str:
        return self.name
