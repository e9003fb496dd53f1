"""No import cycle inside ``vpcli``, counting imports inside functions.

The test reads every module under ``vpcli/`` with :mod:`ast` (nothing is imported), collects
every ``import`` statement wherever it stands (module level, functions, methods, classes,
``try`` blocks), keeps those that name a module of ``vpcli`` and builds the module
dependency graph. A strongly connected component of more than one module is a cycle, and
the test fails listing each one with the import statements inside it.

Edges, for an import statement in module ``M``:

- ``import a.b.c``: ``a.b.c``, and the packages ``a`` and ``a.b`` (Python runs their
  ``__init__`` first).
- ``from a.b import c``: ``a.b`` and its parent packages, and ``a.b.c`` too when ``c`` is a
  submodule. Relative imports are resolved against ``M``'s package first.
- Imports under ``if TYPE_CHECKING:`` never run and are left out; imports of modules
  outside ``vpcli`` (or of ``vpcli`` modules that do not exist) are ignored.

Packages and their own submodules. Python imports a module's parent packages before the
module itself, so a package ``__init__`` that re-exports from its submodules (``pkg ->
pkg.sub``) is fine on its own. The parent packages a submodule gets *implicitly* (``M =
pkg.sub`` importing a sibling, ``from pkg.other import x``) are not edges: ``pkg`` is
already in ``sys.modules`` by the time ``pkg.sub`` runs, so naming it again runs nothing.
Likewise ``from pkg import other`` in ``pkg.sub``, where every imported name is a submodule
(``from . import other``), is an edge to ``pkg.other`` only. But a submodule that takes a
*name* from its own parent package (``from pkg import helper``, ``import pkg``) is an edge
``pkg.sub -> pkg``, and it counts. Together with an ``__init__`` that imports ``pkg.sub``,
Python's loading order decides whether it works: importing ``pkg.sub`` first runs
``pkg/__init__``, which imports ``pkg.sub``, which asks the half-initialised ``pkg`` for
``helper``; that works only when ``__init__`` happened to bind ``helper`` before importing
``pkg.sub`` (an in-function import runs later and works, but the layering is still
circular). The rule here: that is a cycle. Import from the submodule that defines the
name instead.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / 'vpcli'


@dataclasses.dataclass(frozen=True)
class ImportSite:
    """One import statement that makes one edge: where it is and what it says."""
    path: Path
    line: int
    text: str


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``) for every ``.py`` file under ``root``
    (``root`` itself is the top package, named after its directory)."""
    modules = {}
    for path in sorted(root.rglob('*.py')):
        if '__pycache__' in path.parts:
            continue
        parts = (root.name,) + path.relative_to(root).with_suffix('').parts
        is_package = parts[-1] == '__init__'
        if is_package:
            parts = parts[:-1]
        modules['.'.join(parts)] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or \
        (isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _imports(tree: ast.AST):
    """Every ``Import``/``ImportFrom`` node of ``tree`` at any depth, except the bodies of
    ``if TYPE_CHECKING:`` (their ``else`` branches still count)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``['a', 'a.b']``."""
    parts = name.split('.')
    return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a relative ``from`` import names."""
    package = module if is_package else module.rpartition('.')[0]
    parts = package.split('.')
    if level - 1 >= len(parts):
        raise ValueError(f'relative import beyond the top package in {module}')
    base = parts[:len(parts) - (level - 1)]
    return '.'.join(base + ([target] if target else []))


def import_graph(root: Path) -> dict[str, dict[str, list[ImportSite]]]:
    """Module -> {imported module -> the import statements behind that edge} for the
    package at ``root`` (see the module docstring for which edges count)."""
    modules = module_names(root)
    graph: dict[str, dict[str, list[ImportSite]]] = {name: {} for name in modules}
    for module, (path, is_package) in modules.items():
        source = path.read_text()
        tree = ast.parse(source, filename=str(path))
        # a module's own parent packages are loaded before it: naming them implicitly adds nothing
        own = set(_ancestors(module)) | {module}
        for node in _imports(tree):
            site = ImportSite(path, node.lineno, ast.get_source_segment(source, node) or ast.dump(node))
            explicit: set[str] = set()
            implicit: set[str] = set()
            if isinstance(node, ast.Import):
                for alias in node.names:
                    explicit.add(alias.name)
                    implicit.update(_ancestors(alias.name))
            else:
                if node.level:
                    base = _resolve_relative(module, is_package, node.level, node.module)
                else:
                    base = node.module or ''
                submodules = {f'{base}.{alias.name}' for alias in node.names
                              if f'{base}.{alias.name}' in modules}
                explicit.update(submodules)
                implicit.update(_ancestors(base))
                if len(submodules) == len(node.names):
                    implicit.add(base)      # only submodules taken: the package is just a path
                else:
                    explicit.add(base)      # a name is read from ``base`` itself
            targets = explicit | (implicit - own)
            for target in targets:
                if target in modules and target != module:
                    graph[module].setdefault(target, []).append(site)
    return graph


def strongly_connected(graph: dict[str, dict[str, list]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _shortest_cycle(graph: dict[str, dict[str, list]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside it."""
    members = set(component)
    start = component[0]
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node]):
                if successor == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return list(reversed(path)) + [start]
                if successor in members and successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    return component


def find_cycles(root: Path) -> list[str]:
    """One description per import cycle of the package at ``root`` (empty: none)."""
    graph = import_graph(root)
    reports = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        cycle = _shortest_cycle(graph, component)
        lines = [f'cycle among {len(component)} modules: {", ".join(component)}',
                 '  e.g. ' + ' -> '.join(cycle), '  imports inside the cycle:']
        for source in component:
            for target in sorted(set(graph[source]) & set(component)):
                for site in graph[source][target]:
                    where = site.path.relative_to(root.parent)
                    lines.append(f'    {source} -> {target}: {where}:{site.line}: {site.text}')
        reports.append('\n'.join(lines))
    return reports


def test_vpcli_has_no_import_cycle():
    cycles = find_cycles(PACKAGE_ROOT)
    assert not cycles, 'import cycles in vpcli:\n' + '\n'.join(cycles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / 'toy'


def test_detector_finds_cycles(tmp_path):
    """The detector sees a cycle closed by an in-function import, a relative import, a
    submodule that takes a name from its own package, and an ``import a.b`` of a package
    whose ``__init__`` closes the loop."""
    root = _write(tmp_path, {
        'toy/__init__.py': 'from toy.core import helper\n',
        'toy/core.py': 'def helper():\n    from .extra import thing\n    return thing\n',
        'toy/extra.py': 'import toy.core\nthing = 1\n',
        'toy/sub/__init__.py': 'from toy.sub.leaf import leaf\n',
        'toy/sub/leaf.py': 'from toy.sub import other_name\nleaf = 1\n',
        'toy/a.py': 'import toy.b.c\n',
        'toy/b/__init__.py': 'from toy import a\n',
        'toy/b/c.py': 'x = 1\n',
    })
    cycles = find_cycles(root)
    components = sorted(report.splitlines()[0] for report in cycles)
    assert components == ['cycle among 2 modules: toy.a, toy.b',
                          'cycle among 2 modules: toy.core, toy.extra',
                          'cycle among 2 modules: toy.sub, toy.sub.leaf'], cycles
    assert any('toy/core.py:2' in report for report in cycles)


def test_detector_allows_layered_packages(tmp_path):
    """What is not a cycle: ``__init__`` re-exports, sibling imports (which name the parent
    package only implicitly), ``from . import sibling``, and ``TYPE_CHECKING`` imports."""
    root = _write(tmp_path, {
        'toy/__init__.py': 'from toy.one import one\nfrom toy.two import two\n',
        'toy/one.py': 'from . import two\nfrom toy.two import two as _two\none = 1\n',
        'toy/two.py': ('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                       '    from toy.one import one\nelse:\n    import os\ntwo = 2\n'),
    })
    assert find_cycles(root) == []
    graph = import_graph(root)
    assert set(graph['toy']) == {'toy.one', 'toy.two'}
    assert set(graph['toy.one']) == {'toy.two'}
    assert graph['toy.two'] == {}
