"""``voxelprompt recipes``: list the analysis recipes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors


@app.command('recipes')
@reports_errors
def recipes(
    as_json: Annotated[bool, typer.Option('--json', help='Print the recipes as JSON on stdout.')] = False,
) -> None:
    """List analysis recipes (use one with `run --recipe NAME` or `bids --recipe NAME`)."""
    from vpcli.recipes import all_recipes, recipes_dir

    found = all_recipes()
    if as_json:
        print(json.dumps([r.to_json() for r in found.values()], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f'recipes in {recipes_dir()}')
    for column in ('name', 'inputs', 'longitudinal', 'prompt'):
        table.add_column(column)
    for recipe in found.values():
        table.add_row(recipe.name, ', '.join(recipe.inputs), 'yes' if recipe.longitudinal else 'no',
                      recipe.prompt)
    Console().print(table)
