"""Analysis recipes: named, documented prompts with the scans they need.

A recipe is a TOML file in ``recipes/analysis/`` (or a folder named by
``VOXELPROMPT_RECIPES``)::

    name = "hippocampal-asymmetry"
    description = "..."
    prompt = "compute the volume asymmetry of the left and right hippocampus"
    inputs = ["T1w"]          # BIDS suffixes fed to the program, in this order
    longitudinal = false      # true: one job spans all sessions of a participant
    [expected]
    outputs = [...]           # output names (or name fragments) a run should produce
    masks = [...]             # mask descriptions a run should write
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from vpcli.errors import BadInputError


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One analysis recipe (see module docstring for the file format)."""
    name: str
    description: str
    prompt: str
    inputs: tuple[str, ...]
    longitudinal: bool
    expected_outputs: tuple[str, ...]
    expected_masks: tuple[str, ...]
    path: Path

    def to_json(self) -> dict:
        """Machine-readable form for ``voxelprompt recipes --json``."""
        return {'name': self.name, 'description': self.description, 'prompt': self.prompt,
                'inputs': list(self.inputs), 'longitudinal': self.longitudinal,
                'expected': {'outputs': list(self.expected_outputs),
                             'masks': list(self.expected_masks)},
                'path': str(self.path)}


def recipes_dir() -> Path:
    """Where analysis recipes live: ``$VOXELPROMPT_RECIPES`` or the repository's ``recipes/analysis``."""
    override = os.environ.get('VOXELPROMPT_RECIPES')
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / 'recipes' / 'analysis'


def load_recipe_file(path: Path) -> Recipe:
    """Read and check one recipe file."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise BadInputError(f'{path}: cannot read recipe ({error})') from None
    for key, kind in (('name', str), ('description', str), ('prompt', str), ('inputs', list)):
        if not isinstance(data.get(key), kind):
            raise BadInputError(f'{path}: recipe needs `{key}` ({kind.__name__})')
    if not data['inputs'] or not all(isinstance(s, str) for s in data['inputs']):
        raise BadInputError(f'{path}: recipe `inputs` must list BIDS suffixes, e.g. ["T1w"]')
    expected = data.get('expected', {})
    return Recipe(name=data['name'], description=data['description'], prompt=data['prompt'],
                  inputs=tuple(data['inputs']), longitudinal=bool(data.get('longitudinal')),
                  expected_outputs=tuple(expected.get('outputs', ())),
                  expected_masks=tuple(expected.get('masks', ())), path=path)


def all_recipes() -> dict[str, Recipe]:
    """Every recipe by name, sorted."""
    folder = recipes_dir()
    recipes = {}
    for path in sorted(folder.glob('*.toml')) if folder.is_dir() else []:
        recipe = load_recipe_file(path)
        if recipe.name in recipes:
            raise BadInputError(f'{path}: recipe name {recipe.name!r} is used twice')
        recipes[recipe.name] = recipe
    return recipes


def get_recipe(name_or_path: str) -> Recipe:
    """A recipe by name, or from a ``.toml`` path."""
    if name_or_path.endswith('.toml'):
        return load_recipe_file(Path(name_or_path))
    recipes = all_recipes()
    if name_or_path not in recipes:
        known = ', '.join(recipes) or 'none found'
        raise BadInputError(f'recipe {name_or_path!r} not found in {recipes_dir()} (known: {known})')
    return recipes[name_or_path]
