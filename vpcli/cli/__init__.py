"""The ``voxelprompt`` command.

Each command lives in its own module of this package and hands off to library code;
heavy imports (torch, voxel, transformers) happen inside command bodies so that
``voxelprompt --help`` is instant.
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


# each command module registers itself on `app` when imported
from vpcli.cli import example_cmd  # noqa: E402,F401
from vpcli.cli import exec_cmd  # noqa: E402,F401
from vpcli.cli import run_cmd  # noqa: E402,F401
from vpcli.cli import functions_cmd  # noqa: E402,F401
from vpcli.cli import bench_cmd  # noqa: E402,F401
from vpcli.cli import bids_cmd  # noqa: E402,F401
from vpcli.cli import info_cmd  # noqa: E402,F401
from vpcli.cli import recipes_cmd  # noqa: E402,F401
from vpcli.cli import synth_cmd  # noqa: E402,F401
from vpcli.cli import train_cmd  # noqa: E402,F401
from vpcli.cli import eval_cmd  # noqa: E402,F401


def main() -> None:
    """Console-script entry point."""
    app()
