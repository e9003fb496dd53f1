"""Generate ``docs/functions.md`` (and the ``voxelprompt functions`` listings) from the registry.

The registry (:mod:`vpcli.library.registry`) is the single source of truth for what a
program may call; this module only renders it. Regenerate the committed page after
changing any agent function::

    python -m vpcli functions --markdown > docs/functions.md

A test fails when the committed page differs from what this module renders.
"""

from __future__ import annotations

import dataclasses
import json

#: where the generated page lives, relative to the repository root
FUNCTIONS_PAGE = 'docs/functions.md'

_INTRO = """\
# Function library

<!-- Generated from the function registry by `python -m vpcli functions --markdown`;
     do not edit by hand (a test checks this page matches the code). -->

These are the functions the programs of `voxelprompt` may call: what the language model
writes, what `voxelprompt exec` runs, and what the saved `script.py` contains. Programs
use only these names (plus literals, arithmetic, comparisons, f-strings and tuple
indexing), so every argument below is a scan (`img0`, `img1`, ... in the order the files
were given), a mask, or a plain number, string or tuple.

Units: volumes in mL, distances in mm, coordinates in scanner RAS mm (x towards the
subject's right, y anterior, z superior), intensities in the image's own units (HU for
CT). Directions are anatomical whatever the voxel order (RAS, LPS, LIA, oblique) of the
file. A mask must lie on the voxel grid of the scan it is used with; `resample_mask`
moves it to another scan's grid.
"""


def _registry():
    from vpcli.library.registry import CATEGORIES, registry
    return CATEGORIES, registry()


def functions_by_category() -> list[tuple[str, list]]:
    """``[(category, [LibraryFunction, ...]), ...]`` in documentation order, names sorted."""
    categories, entries = _registry()
    grouped = []
    for category in categories:
        members = sorted((f for f in entries.values() if f.category == category),
                         key=lambda f: f.name)
        if members:
            grouped.append((category, members))
    return grouped


def _thresholds_section() -> list[str]:
    from vpcli.library.characterization import THRESHOLDS, CharacterizationThresholds

    lines = ['### Characterization thresholds', '',
             'The cut-offs the characterization classes use (unitless intensity ratios; '
             '`THRESHOLDS` in `vpcli/library/characterization.py`). Synthetic lesions are '
             'generated to clear them.', '',
             '| threshold | value | meaning |', '|---|---|---|']
    meanings = _attribute_docs(CharacterizationThresholds)
    for field in dataclasses.fields(THRESHOLDS):
        value = getattr(THRESHOLDS, field.name)
        lines.append(f'| `{field.name}` | {value:g} | {meanings.get(field.name, "")} |')
    return lines + ['']


def _attribute_docs(cls) -> dict[str, str]:
    """``{attribute: description}`` from a Google-style ``Attributes:`` docstring section."""
    import inspect

    result, current = {}, None
    in_section = False
    for line in inspect.cleandoc(cls.__doc__ or '').splitlines():
        if line.strip() == 'Attributes:':
            in_section = True
            continue
        if not in_section:
            continue
        if line.startswith('    ') and not line.startswith('        ') and ':' in line:
            current, _, text = line.strip().partition(':')
            result[current] = text.strip()
        elif line.startswith('        ') and current:
            result[current] += ' ' + line.strip()
        elif line.strip() and not line.startswith(' '):
            break
    return result


def render_markdown() -> str:
    """The full ``docs/functions.md`` page, grouped by category."""
    grouped = functions_by_category()
    lines = [_INTRO, '## Contents', '']
    for category, members in grouped:
        names = ', '.join(f'[`{f.name}`](#{f.name})' for f in members)
        lines.append(f'- **{category}**: {names}')
    lines.append('')
    for category, members in grouped:
        lines += [f'## {category[0].upper() + category[1:]}', '']
        for entry in members:
            lines += [f'### {entry.name}', '',
                      f'`{entry.usage()}` → {entry.returns}', '',
                      '```text', entry.doc, '```', '']
        if category == 'characterization':
            lines += _thresholds_section()
    return '\n'.join(lines).rstrip('\n') + '\n'


def registry_json() -> str:
    """The registry as JSON: ``{"functions": [...]}`` in documentation order."""
    functions = [entry.to_json() for _, members in functions_by_category() for entry in members]
    return json.dumps({'functions': functions}, indent=2, default=str) + '\n'
