"""The function library programs call (DESIGN.md §3).

Importing this package registers every agent-callable function in
:mod:`vpcli.library.registry`. Each module groups one category; add one import line
per module here.
"""

from vpcli.library import characterization  # noqa: F401 - registers functions
from vpcli.library import comparison  # noqa: F401
from vpcli.library import edits  # noqa: F401
from vpcli.library import intensity  # noqa: F401
from vpcli.library import labels  # noqa: F401
from vpcli.library import masks  # noqa: F401
from vpcli.library import morphometry  # noqa: F401
from vpcli.library import reporting  # noqa: F401
from vpcli.library import vision  # noqa: F401
from vpcli.library.registry import LibraryFunction, agent_function, api_text, registry

__all__ = ['LibraryFunction', 'agent_function', 'api_text', 'registry']
