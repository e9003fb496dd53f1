"""The registry documents itself: every entry has a summary, Args, Returns and a unit/type.

Also checks that the committed docs/functions.md is exactly what the registry renders,
so the documentation cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vpcli.docsgen import FUNCTIONS_PAGE, render_markdown
from vpcli.library.registry import CATEGORIES, api_text, registry

#: a registry entry's `returns` must name one of these types, or give a unit after a comma
RETURN_TYPES = ('mask', 'image', 'float', 'int', 'str', 'tuple', 'list', 'bool', 'none',
                'encoding', 'dict')

ENTRIES = sorted(registry().values(), key=lambda entry: entry.name)


def docstring_sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections (``Args``, ``Returns``, ...) -> their indented lines."""
    sections, current = {}, None
    for line in doc.splitlines():
        header = re.fullmatch(r'([A-Z][A-Za-z ]*):', line.strip())
        if header and not line.startswith(' '):
            current = header.group(1)
            sections[current] = []
        elif current is not None and line.startswith(' '):
            sections[current].append(line)
        elif current is not None and line.strip():
            current = None
    return sections


def test_registry_is_not_empty_and_categorised():
    names = {entry.name for entry in ENTRIES}
    # the fixed names of the issue that this library provides
    assert {'volume', 'extent', 'center_of_mass', 'mean_intensity', 'select_labels'} <= names
    assert all(entry.category in CATEGORIES for entry in ENTRIES)


@pytest.mark.parametrize('entry', ENTRIES, ids=lambda entry: entry.name)
def test_entry_is_fully_documented(entry):
    assert entry.summary.strip(), 'summary line missing'
    sections = docstring_sections(entry.doc)
    documented = {re.match(r'\s+\*{0,2}(\w+)', line).group(1)
                  for line in sections.get('Args', [])
                  if re.match(r'\s{4}\*{0,2}\w+( \(.*\))?:', line)}
    parameters = set(entry.signature.parameters)
    assert parameters <= documented, f'Args section misses {sorted(parameters - documented)}'
    assert sections.get('Returns'), 'Returns section missing'
    returns = entry.returns.lower()
    assert any(re.search(rf'\b{kind}\b', returns) for kind in RETURN_TYPES) or ',' in returns, \
        f'returns {entry.returns!r} names no type or unit'


def test_api_text_lists_every_function():
    text = api_text()
    for entry in ENTRIES:
        assert f'{entry.usage()} -> {entry.returns}' in text


def test_committed_functions_page_matches_the_registry():
    page = Path(__file__).resolve().parents[1] / FUNCTIONS_PAGE
    assert page.read_text() == render_markdown(), (
        f'{FUNCTIONS_PAGE} is stale; regenerate it with '
        f'`python -m vpcli functions --markdown > {FUNCTIONS_PAGE}`')


def test_page_has_every_function_and_the_thresholds():
    page = render_markdown()
    for entry in ENTRIES:
        assert f'### {entry.name}\n' in page and entry.doc in page
    assert '| `hyperintense_above` | 1.15 |' in page
