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


def main() -> None:
    """Console-script entry point."""
    app()
