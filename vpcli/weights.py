"""Where the shipped weights are, and what they are.

Resolution order: an explicit ``--weights DIR``, then ``$VOXELPROMPT_WEIGHTS``, then the
repository's ``weights/`` folder. A weights folder holds the checkpoints, the tokenizer,
``manifest.json`` (file, sha256, config, recipe, steps, data sources and licences,
evaluation numbers) and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vpcli.errors import BadInputError

MANIFEST = 'manifest.json'


def default_weights_dir() -> Path:
    """The repository's ``weights/`` folder."""
    return Path(__file__).resolve().parent.parent / 'weights'


def resolve_weights_dir(explicit: os.PathLike | str | None = None) -> Path:
    """The weights folder to use (see module docstring for the order)."""
    if explicit:
        return Path(explicit)
    if os.environ.get('VOXELPROMPT_WEIGHTS'):
        return Path(os.environ['VOXELPROMPT_WEIGHTS'])
    return default_weights_dir()


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when it has none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadInputError(f'{path}: cannot be read ({error})') from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get('files'), list):
        raise BadInputError(f'{path}: expected an object with a "files" list')
    return manifest


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(folder: Path) -> dict:
    """Check every file listed in the manifest exists with the recorded sha256.

    Returns:
        The manifest, with ``weights_sha256``: one checksum over the listed files'
        checksums (what ``metrics.json`` records as the weights' identity).
    """
    manifest = read_manifest(folder)
    if manifest is None:
        raise BadInputError(f'{folder}: no {MANIFEST}; not a voxelprompt weights folder '
                            f'(give --weights DIR or set VOXELPROMPT_WEIGHTS)')
    combined = hashlib.sha256()
    for entry in manifest['files']:
        path = folder / entry['file']
        if not path.is_file():
            raise BadInputError(f'{path}: listed in {MANIFEST} but missing')
        actual = sha256_file(path)
        if actual != entry.get('sha256'):
            raise BadInputError(f'{path}: sha256 {actual[:12]}… does not match {MANIFEST} '
                                f'({str(entry.get("sha256"))[:12]}…); the file is damaged or '
                                f'was replaced')
        combined.update(actual.encode())
    return {**manifest, 'weights_sha256': combined.hexdigest()}
