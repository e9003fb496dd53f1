"""Analysis recipes load, are complete, and list as JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vpcli.cli import app
from vpcli.errors import BadInputError
from vpcli.recipes import all_recipes, get_recipe, load_recipe_file


def test_every_recipe_loads_and_is_complete():
    recipes = all_recipes()
    assert len(recipes) >= 6
    for recipe in recipes.values():
        assert recipe.prompt and recipe.description and recipe.inputs
        assert set(recipe.inputs) <= {'T1w', 'T2w', 'FLAIR', 'PD', 'T2starw', 'dwi', 'ct'} | {'ADC'}
    assert any(r.longitudinal for r in recipes.values())


def test_recipes_json_is_pure_stdout():
    result = CliRunner().invoke(app, ['recipes', '--json'])
    assert result.exit_code == 0
    names = [r['name'] for r in json.loads(result.stdout)]
    assert names == sorted(all_recipes())


def test_unknown_and_broken_recipes(tmp_path):
    with pytest.raises(BadInputError, match='not found'):
        get_recipe('no-such-recipe')
    broken = tmp_path / 'broken.toml'
    broken.write_text('name = "x"\nprompt = 3\n')
    with pytest.raises(BadInputError, match=str(broken)):
        load_recipe_file(broken)
