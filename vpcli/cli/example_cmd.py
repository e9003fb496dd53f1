"""``voxelprompt example``: write the bundled real example scan as a BIDS dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors


@app.command('example')
@reports_errors
def example(
    output_dir: Annotated[Path, typer.Argument(help='Folder to write the example BIDS dataset to.')],
) -> None:
    """Write the example scan (MNI ICBM152 2009c T1w, from nilearn) and a tissue label map."""
    from vpcli.examples import write_example

    files = write_example(output_dir)
    for role, path in files.items():
        print(f'{role}\t{path}')
