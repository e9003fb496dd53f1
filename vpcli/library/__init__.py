"""The function library programs call (DESIGN.md §3).

Importing this package registers every agent-callable function in
:mod:`vpcli.library.registry`. Each module groups one category.
"""

from vpcli.library import labels, morphometry, vision  # noqa: F401 - registers functions
from vpcli.library.registry import LibraryFunction, agent_function, api_text, registry

__all__ = ['LibraryFunction', 'agent_function', 'api_text', 'registry']
