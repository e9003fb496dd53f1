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


def read_manifest(folder: Path | str) -> dict | None:
    """The folder's manifest, or None when it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadInputError(f'{path}: cannot be read ({error})') from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get('files'), list):
        raise BadInputError(f'{path}: expected an object with a "files" list')
    return manifest


def half_state(tensors: dict) -> dict:
    """A state dict on the CPU with its floating-point tensors in fp16 (what compact
    training states and shipped vision weights store; they load back into fp32)."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
            for k, v in tensors.items()}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(folder: Path | str) -> dict:
    """Check every file listed in the manifest exists with the recorded sha256.

    Args:
        folder: The weights folder (a path or a string).

    Returns:
        The manifest, with ``weights_sha256``: one checksum over the listed files'
        checksums (what ``metrics.json`` records as the weights' identity).
    """
    folder = Path(folder)
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


class Bundle:
    """Loaded weights: the agent (language model + tokenizer) and the vision network.

    Attributes:
        folder: The weights folder.
        manifest: Its manifest (with ``weights_sha256``).
        agent: :class:`vpcli.agent.loop.Agent`, ready to write programs.
        vision: :class:`vpcli.vision.model.VisionNetwork` in eval mode.
        device: Torch device both live on.
    """

    def __init__(self, folder: Path, manifest: dict, agent, vision, device: str):
        self.folder, self.manifest = folder, manifest
        self.agent, self.vision, self.device = agent, vision, device

    @property
    def sha256(self) -> str:
        """One checksum over every weights file (what ``metrics.json`` records)."""
        return self.manifest['weights_sha256']


def _role_file(folder: Path, manifest: dict, role: str, default: str) -> Path:
    for entry in manifest['files']:
        if entry.get('role') == role:
            return folder / entry['file']
    return folder / default


def load_bundle(explicit: os.PathLike | str | None = None, device: str = 'cpu') -> Bundle:
    """Load the weights folder (``--weights``, ``$VOXELPROMPT_WEIGHTS``, or ``weights/``).

    Every listed file's sha256 is verified first.

    Raises:
        BadInputError: no weights folder, a damaged file, or a checkpoint that does not load.
    """
    folder = resolve_weights_dir(explicit)
    if not folder.is_dir():
        raise BadInputError(f'{folder}: no such weights folder (give --weights DIR or set '
                            f'VOXELPROMPT_WEIGHTS)')
    manifest = verify_manifest(folder)
    from vpcli.agent.loop import Agent
    from vpcli.agent.model import IncompatibleModelText
    from vpcli.vision.model import VisionNetwork

    agent_path = _role_file(folder, manifest, 'agent', 'agent.pt')
    vision_path = _role_file(folder, manifest, 'vision', 'vision.pt')
    try:
        agent = Agent.load(agent_path, device)
    except IncompatibleModelText as error:
        raise BadInputError(f'{agent_path}: {error}') from None
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise BadInputError(f'{agent_path}: not a voxelprompt agent checkpoint ({error})') from None
    vision = VisionNetwork.load(vision_path, device)
    vision.eval()
    return Bundle(folder, manifest, agent, vision, device)


def write_weights(folder: os.PathLike | str, agent_model, tokenizer, vision, info: dict) -> dict:
    """Write a weights folder: ``agent.pt`` (model + tokenizer), ``vision.pt``,
    ``tokenizer.model`` and ``manifest.json`` (files with sha256 and role, model configs,
    plus ``info``: recipe, steps, data sources, evaluation).

    Models are written as they are, in fp32: both are a few MB, and fp16 would change
    greedy decoding.
    """
    import dataclasses

    from vpcli.agent.model_text import MODEL_TEXT_VERSION
    from vpcli.volumes import write_text_atomic
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    device = next(agent_model.parameters()).device
    agent_model.cpu().save(folder / 'agent.pt', tokenizer.model_bytes)
    agent_model.to(device)
    vision_device = vision.device
    vision.cpu().save(folder / 'vision.pt')
    vision.to(vision_device)
    tokenizer.save(folder / 'tokenizer.model')
    files = [{'file': name, 'role': role, 'sha256': sha256_file(folder / name),
              'bytes': (folder / name).stat().st_size}
             for name, role in (('agent.pt', 'agent'), ('vision.pt', 'vision'),
                                ('tokenizer.model', 'tokenizer'))]
    manifest = {'format': 1, 'files': files, **info,
                'model_text': MODEL_TEXT_VERSION,
                'agent_config': dataclasses.asdict(agent_model.config),
                'vision_config': vision.config.to_dict(),
                'tokenizer_pieces': len(tokenizer)}
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + '\n')
    from vpcli import model_card
    model_card.write(folder)
    return manifest
