"""``voxelprompt functions``: list the functions programs may call."""

from __future__ import annotations

from typing import Annotated

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors


@app.command('functions')
@reports_errors
def functions(
    as_json: Annotated[bool, typer.Option('--json', help='Print the registry as JSON (only JSON '
                                                          'on stdout).')] = False,
    as_markdown: Annotated[bool, typer.Option('--markdown', help='Print the docs/functions.md '
                                                                  'page.')] = False,
) -> None:
    """List the library functions a program may call, with arguments, return units and summary."""
    from vpcli import docsgen

    if as_json and as_markdown:
        raise typer.BadParameter('give at most one of --json and --markdown')
    if as_json:
        typer.echo(docsgen.registry_json(), nl=False)
        return
    if as_markdown:
        typer.echo(docsgen.render_markdown(), nl=False)
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    for category, members in docsgen.functions_by_category():
        # one table per category: narrower than a category column, readable at 80 columns
        table = Table(title=category, title_justify='left', title_style='bold', expand=True)
        table.add_column('call', style='cyan', ratio=3)
        table.add_column('returns', ratio=2)
        table.add_column('summary', ratio=4)
        for entry in members:
            table.add_row(entry.usage(), entry.returns, entry.summary)
        console.print(table)
    console.print('Full documentation: docs/functions.md (or `voxelprompt functions --markdown`).')
