"""The one registry of agent-callable functions.

Every function a program may call is registered here with :func:`agent_function`. The
registry is the single source of truth for:

- the sandbox whitelist (``vpcli.sandbox`` only calls names found here),
- the API text the language model is trained on (:func:`api_text`),
- ``voxelprompt functions [--json]`` and the generated ``docs/functions.md``.

A registered function documents itself with a Google-style docstring whose ``Args``
and ``Returns`` sections state units (mL, mm, scanner RAS mm, the image's own
intensity units). A test checks every entry is documented.

Functions that need the run's state (``output``, ``answer``, ``save``, ``read``, the
vision calls) declare a first parameter named ``context``; the sandbox passes the
current :class:`RunContext`, and the parameter is hidden from the API text.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

#: categories in documentation order (DESIGN.md §3)
CATEGORIES = ('vision', 'morphometry', 'intensity', 'mask algebra', 'image edits', 'comparison',
              'characterization', 'labels', 'reporting')


@dataclasses.dataclass(frozen=True)
class LibraryFunction:
    """One agent-callable function.

    Attributes:
        name: The name programs call it by.
        func: The Python callable.
        category: One of :data:`CATEGORIES`.
        returns: Short description of the return value with its unit (``"float, mL"``).
        needs_context: The sandbox passes the run context as the first argument.
    """
    name: str
    func: Callable[..., Any]
    category: str
    returns: str
    needs_context: bool

    @property
    def signature(self) -> inspect.Signature:
        """The call signature a program sees (without ``context``)."""
        signature = inspect.signature(self.func)
        parameters = list(signature.parameters.values())
        if self.needs_context:
            parameters = parameters[1:]
        return signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)

    @property
    def doc(self) -> str:
        """The cleaned docstring."""
        return inspect.cleandoc(self.func.__doc__ or '')

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        return self.doc.splitlines()[0] if self.doc else ''

    def usage(self) -> str:
        """``name(arg, arg=default)`` as a program would write it."""
        parts = []
        for parameter in self.signature.parameters.values():
            text = parameter.name
            if parameter.kind is parameter.VAR_POSITIONAL:
                text = '*' + text
            elif parameter.default is not parameter.empty:
                text += f'={parameter.default!r}'
            parts.append(text)
        return f'{self.name}({", ".join(parts)})'

    def to_json(self) -> dict:
        """Machine-readable description for ``voxelprompt functions --json``."""
        parameters = []
        for parameter in self.signature.parameters.values():
            entry = {'name': parameter.name,
                     'variadic': parameter.kind is parameter.VAR_POSITIONAL}
            if parameter.default is not parameter.empty:
                entry['default'] = parameter.default
            parameters.append(entry)
        return {'name': self.name, 'category': self.category, 'usage': self.usage(),
                'parameters': parameters, 'returns': self.returns, 'summary': self.summary,
                'doc': self.doc}


_REGISTRY: dict[str, LibraryFunction] = {}


def agent_function(category: str, returns: str) -> Callable[[Callable], Callable]:
    """Register a function as callable from programs.

    Args:
        category: One of :data:`CATEGORIES`.
        returns: The return value and its unit, e.g. ``"float, mL"``.
    """
    if category not in CATEGORIES:
        raise ValueError(f'unknown category {category!r}; expected one of {CATEGORIES}')

    def decorate(func: Callable) -> Callable:
        name = func.__name__.rstrip('_')  # allows e.g. `round_` for a builtin-shadowing name
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f'agent function {name!r} registered twice')
        parameters = list(inspect.signature(func).parameters)
        _REGISTRY[name] = LibraryFunction(name=name, func=func, category=category,
                                          returns=returns,
                                          needs_context=bool(parameters) and parameters[0] == 'context')
        return func
    return decorate


def registry() -> dict[str, LibraryFunction]:
    """All registered functions by name.

    Every library module has registered its functions by then: Python imports the package
    :mod:`vpcli.library`, whose ``__init__`` imports each module, before this module (so
    this module does not import its own package: that would be an import cycle).
    """
    return dict(_REGISTRY)


def api_text() -> str:
    """The compact API description the language model is conditioned on / trained with."""
    lines = []
    for category in CATEGORIES:
        entries = [f for f in registry().values() if f.category == category]
        for entry in sorted(entries, key=lambda f: f.name):
            lines.append(f'{entry.usage()} -> {entry.returns}: {entry.summary}')
    return '\n'.join(lines)
