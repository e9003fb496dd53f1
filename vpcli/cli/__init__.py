"""The ``voxelprompt`` command.

Each command lives in its own module of this package and hands off to library code;
heavy imports (torch, voxel, transformers) happen inside command bodies so that
``voxelprompt --help`` is instant.
"""

from __future__ import annotations

from vpcli.cli._app import app

# each command module registers itself on `app` (:mod:`vpcli.cli._app`) when imported
from vpcli.cli import example_cmd  # noqa: F401
from vpcli.cli import exec_cmd  # noqa: F401
from vpcli.cli import run_cmd  # noqa: F401
from vpcli.cli import functions_cmd  # noqa: F401
from vpcli.cli import bench_cmd  # noqa: F401
from vpcli.cli import bids_cmd  # noqa: F401
from vpcli.cli import info_cmd  # noqa: F401
from vpcli.cli import recipes_cmd  # noqa: F401
from vpcli.cli import synth_cmd  # noqa: F401
from vpcli.cli import train_cmd  # noqa: F401
from vpcli.cli import eval_cmd  # noqa: F401

# the command modules are named here so that they count as used (pyflakes)
__all__ = ['app', 'main', 'example_cmd', 'exec_cmd', 'run_cmd', 'functions_cmd', 'bench_cmd',
           'bids_cmd', 'info_cmd', 'recipes_cmd', 'synth_cmd', 'train_cmd', 'eval_cmd']


def main() -> None:
    """Console-script entry point."""
    app()
