"""The ``voxelprompt`` Typer application that every command module registers itself on.

It lives apart from the package ``__init__`` so that command modules import it from here,
not from the package that imports them (no import cycle).
"""

from __future__ import annotations

import typer

from vpcli import __version__

app = typer.Typer(
    name='voxelprompt',
    help='Language-prompted brain image analysis: a prompt and scans in; masks, metrics.json '
         'and the program that ran out.',
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode='rich',
)


def _version(value: bool) -> None:
    if value:
        print(f'voxelprompt {__version__}')
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, '--version', callback=_version, is_eager=True,
                                       help='Print the version and exit.')) -> None:
    """voxelprompt: language-prompted brain image analysis."""
