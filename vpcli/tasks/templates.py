"""Prompt templates per task category, read from ``data/templates/<category>.toml``.

Each file holds ``category``, a ``[slots]`` table (name -> alternatives, may nest) and
``[[template]]`` entries: ``text`` plus optional filters a task must match for the
template to be used: ``variant`` (the task's variant; default ``basic``), ``axis`` (``lr``/``ap``/``si``),
``direction`` (``growth``/``shrinkage``), ``modality`` (``mri``/``ct``). Runtime slots
such as ``{roi}`` are bound by the task writer (see docs/tasks.md for the list).
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib

from vpcli.tasks.ontology import DATA_DIR

#: the task categories of VoxelPrompt Table 1, in the table's order
CATEGORIES = ('segmentation', 'volume', 'volume_change', 'volume_comparison', 'relative_volume',
              'extent', 'extent_change', 'center_of_mass', 'intensity', 'intensity_comparison',
              'intensity_change', 'location', 'enhancement', 'diffusion', 'signal_intensity',
              'cropping', 'tissue_removal')

#: template fields that filter which tasks a template fits
FILTERS = ('variant', 'axis', 'direction', 'modality')


@dataclasses.dataclass(frozen=True)
class Template:
    """One prompt template.

    Attributes:
        text: Template text with ``{slot}`` references.
        filters: Filter name -> required value (absent filters match every task).
        index: Position in its file (for error messages and coverage reports).
    """
    text: str
    filters: tuple[tuple[str, str], ...]
    index: int

    def fits(self, **task: str | None) -> bool:
        """True when every filter of the template equals the task's value
        (:func:`filters_fit`)."""
        return filters_fit(self.filters, task)


def filters_fit(filters: tuple[tuple[str, str], ...], task: dict) -> bool:
    """True when every filter equals the task's value. A template (or paraphrase family)
    without a ``variant`` filter serves the ``basic`` variant only, so a variant's prompts
    always ask for what its program computes."""
    wanted = dict(filters)
    wanted.setdefault('variant', 'basic')
    return all(task.get(name) == value for name, value in wanted.items())


@dataclasses.dataclass(frozen=True)
class CategoryTemplates:
    """The templates and slots of one category."""
    category: str
    slots: dict[str, tuple[str, ...]]
    templates: tuple[Template, ...]

    def matching(self, **task: str | None) -> list[Template]:
        """Templates that fit a task."""
        return [t for t in self.templates if t.fits(**task)]


@functools.lru_cache(maxsize=None)
def load_templates(category: str) -> CategoryTemplates:
    """Read one category's template file."""
    if category not in CATEGORIES:
        raise KeyError(f'unknown task category {category!r}; expected one of {CATEGORIES}')
    path = DATA_DIR / 'templates' / f'{category}.toml'
    with open(path, 'rb') as file:
        raw = tomllib.load(file)
    if raw.get('category') != category:
        raise ValueError(f'{path}: category field is {raw.get("category")!r}, expected {category!r}')
    templates = []
    for index, entry in enumerate(raw['template']):
        unknown = set(entry) - {'text', *FILTERS}
        if unknown:
            raise ValueError(f'{path}: template {index} has unknown fields {sorted(unknown)}')
        filters = tuple(sorted((k, entry[k]) for k in FILTERS if k in entry))
        templates.append(Template(entry['text'], filters, index))
    slots = {name: tuple(values) for name, values in raw.get('slots', {}).items()}
    return CategoryTemplates(category, slots, tuple(templates))
