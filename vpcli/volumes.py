"""Scans in, masks and images out.

Every volume is a :class:`voxel.Volume` from load to save; its world geometry (voxel
to scanner-RAS mm) travels with it. This module adds only what the agent and the run
outputs need on top: per-scan metadata (:class:`Scan`), binary masks that remember
which scans they came from (:class:`Mask`), validated loading with one-line errors,
and atomic saving.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from vpcli.errors import BadInputError

if TYPE_CHECKING:  # torch and voxel are imported lazily so `voxelprompt --help` stays instant
    import numpy as np
    import voxel as vx

#: file name endings voxelprompt reads and writes
VOLUME_SUFFIXES = ('.nii.gz', '.nii', '.mgz', '.mgh')

#: BIDS suffix (the last ``_``-separated entity before the extension) -> modality name
#: the agent sees. Unknown suffixes give modality ``unknown``.
BIDS_SUFFIX_MODALITY = {
    't1w': 'T1w', 't1': 'T1w', 'mprage': 'T1w', 'orig': 'T1w', 'brain': 'T1w', 'norm': 'T1w',
    't2w': 'T2w', 't2': 'T2w',
    'flair': 'FLAIR', 't2flair': 'FLAIR',
    'pd': 'PD', 'pdw': 'PD',
    't2starw': 'GRE', 't2star': 'GRE', 'gre': 'GRE', 'swi': 'GRE',
    'dwi': 'DWI', 'trace': 'DWI',
    'adc': 'ADC', 'md': 'ADC',
    'ct': 'CT',
    'dseg': 'labelmap', 'aseg': 'labelmap', 'aparc+aseg': 'labelmap', 'seg': 'labelmap',
    'label': 'labelmap', 'labels': 'labelmap', 'mask': 'labelmap',
    # post-contrast T1 (BIDS: ce-<agent> entity) is detected separately
}

#: modality names the agent knows (the order is the documentation order)
MODALITIES = ('T1w', 'T2w', 'FLAIR', 'PD', 'GRE', 'DWI', 'ADC', 'CT', 'labelmap', 'unknown')


@dataclasses.dataclass(frozen=True)
class SourceRef:
    """A scan that a derived volume or number came from: its variable name and file."""
    name: str
    file: str | None = None

    def __str__(self) -> str:
        return self.name if self.file is None else f'{self.name} ({self.file})'


#: the one name of a post-contrast T1w wherever a modality is a string (task requests,
#: synthesis, per-modality tables); scan lines read ``T1w post-contrast`` (:func:`modality_label`)
POST_CONTRAST = 'T1w+contrast'


def modality_label(modality: str, contrast: bool) -> str:
    """The modality as a scan's state line names it: ``T1w`` or ``T1w post-contrast``."""
    return modality + (' post-contrast' if contrast else '')


def state_line(name: str, modality: str, contrast: bool, date: str | None,
               session: str | None) -> str:
    """One scan's line of the agent's state: ``img0: T1w, date 2021-04-02, session 01``
    (``unknown`` for a missing date or session)."""
    modality = modality_label(modality, contrast)
    return f'{name}: {modality}, date {date or "unknown"}, session {session or "unknown"}'


@dataclasses.dataclass(frozen=True, eq=False)
class Scan:
    """An input scan (or an image derived from one) plus the metadata the agent sees.

    Attributes:
        volume: The image; geometry maps voxel centres to scanner RAS in mm.
        name: Variable name in programs (``img0``, ``img1``, ... in the order given).
        path: The file it was read from; None for derived images.
        modality: One of :data:`MODALITIES`.
        date: Acquisition date, if known.
        session: BIDS session label (without ``ses-``), if known.
        contrast: True for a post-contrast acquisition (BIDS ``ce-`` entity).
        sha256: Checksum of the file it was read from (None for derived images).
        sources: The input scans it came from (itself, for an input).
    """
    volume: 'vx.Volume'
    name: str
    path: Path | None = None
    modality: str = 'unknown'
    date: dt.date | None = None
    session: str | None = None
    contrast: bool = False
    sha256: str | None = None
    sources: tuple[SourceRef, ...] = ()

    @property
    def label(self) -> str:
        """How error messages name this scan: ``img0 (sub-01_T1w.nii.gz)``."""
        return str(SourceRef(self.name, self.path.name if self.path else None))

    def derive(self, volume: 'vx.Volume', suffix: str) -> 'Scan':
        """An image made from this scan (crop, removal, ...): same metadata, new voxels."""
        return dataclasses.replace(self, volume=volume, name=f'{self.name}_{suffix}', path=None,
                                   sha256=None)

    def describe(self, date: bool = True, session: bool = True) -> str:
        """The one line per scan that starts the agent's state (name, modality, date, session).

        ``date=False`` or ``session=False`` writes that item as unknown.
        """
        return state_line(self.name, self.modality, self.contrast,
                          self.date.isoformat() if date and self.date else None,
                          self.session if session else None)


@dataclasses.dataclass(frozen=True, eq=False)
class Mask:
    """A binary mask on the grid of the scan it belongs to.

    Attributes:
        volume: Boolean single-channel volume; geometry equals its scan's.
        sources: The scans it was computed from.
        description: What it is, in words (``left hippocampus``), for QC and file names.
        quality: QC signals of a mask the vision network made (:func:`vpcli.quality.mask_signals`);
            None for masks made otherwise.
    """
    volume: 'vx.Volume'
    sources: tuple[SourceRef, ...] = ()
    description: str = 'mask'
    quality: dict | None = None

    @property
    def label(self) -> str:
        """How error messages name this mask."""
        origin = ', '.join(str(s) for s in self.sources) or 'no scan'
        return f'mask "{self.description}" from {origin}'


# -----------------------------------------------------------------------------
# loading
# -----------------------------------------------------------------------------

def volume_suffix(path: os.PathLike | str) -> str | None:
    """The recognised volume file ending of ``path`` (``.nii.gz``, ...), or None."""
    lower = str(path).lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)


def bids_entities(path: Path) -> tuple[dict[str, str], str | None]:
    """Split a BIDS-like file name into its ``key-value`` entities and its suffix.

    ``sub-01_ses-02_ce-gad_T1w.nii.gz`` -> ``({'sub': '01', 'ses': '02', 'ce': 'gad'}, 'T1w')``
    """
    ending = volume_suffix(path) or ''.join(path.suffixes)
    stem = path.name[:len(path.name) - len(ending)] if ending else path.name
    entities, suffix = {}, None
    for part in stem.split('_'):
        if '-' in part and not part.startswith('-'):
            key, _, value = part.partition('-')
            entities[key] = value
        else:
            suffix = part
    if suffix is None and '_' not in stem and '-' not in stem:
        suffix = stem
    return entities, suffix


def _parse_date(text: str | None) -> dt.date | None:
    """A date from ``2021-03-04``, ``2021-03-04T10:11:12``, ``20210304``; else None."""
    if not text:
        return None
    match = re.match(r'^\s*(\d{4})-?(\d{2})-?(\d{2})', str(text))
    if not match:
        return None
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        return None


def sidecar_path(path: Path) -> Path:
    """The BIDS JSON sidecar that belongs to a volume file."""
    ending = volume_suffix(path) or path.suffix
    return path.with_name(path.name[:len(path.name) - len(ending)] + '.json')


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of a volume file, or ``{}`` when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(f'{side}: JSON sidecar cannot be read ({error})') from None
    if not isinstance(data, dict):
        raise BadInputError(f'{side}: JSON sidecar is not an object')
    return data


def infer_metadata(path: Path, sidecar: dict | None = None) -> dict:
    """Modality, date, session and contrast of a scan from its file name and sidecar.

    Modality comes from the BIDS suffix, else from the sidecar (``Modality: CT``,
    ``SeriesDescription``); date from the sidecar's ``AcquisitionDateTime`` or
    ``AcquisitionDate``, else from a session label that is a date; session from the
    ``ses-`` entity.
    """
    sidecar = sidecar or {}
    entities, suffix = bids_entities(path)
    modality = BIDS_SUFFIX_MODALITY.get((suffix or '').lower(), 'unknown')
    if modality == 'unknown' and str(sidecar.get('Modality', '')).upper() == 'CT':
        modality = 'CT'
    if modality == 'unknown':
        description = str(sidecar.get('SeriesDescription', '')).lower()
        for key, value in (('flair', 'FLAIR'), ('adc', 'ADC'), ('dwi', 'DWI'), ('t2', 'T2w'),
                           ('t1', 'T1w'), ('swi', 'GRE'), ('gre', 'GRE'), ('pd', 'PD')):
            if key in description:
                modality = value
                break
    session = entities.get('ses')
    date = (_parse_date(sidecar.get('AcquisitionDateTime'))
            or _parse_date(sidecar.get('AcquisitionDate'))
            or _parse_date(session))
    contrast = 'ce' in entities or bool(sidecar.get('ContrastBolusIngredient'))
    return dict(modality=modality, date=date, session=session, contrast=contrast)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def load_volume(path: os.PathLike | str, *, label_map: bool | None = None) -> 'vx.Volume':
    """Read a 3D NIfTI or MGH file through ``voxel``, checking that it is usable.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.mgz`` or ``.mgh`` file.
        label_map: Keep integer voxel values (True), convert to float32 (False), or
            decide from the data type (None: integer files stay integer).

    Returns:
        A single-channel volume; header geometry (affine, orientation) preserved.

    Raises:
        BadInputError: one line naming the file and the problem (missing, not a volume
            format, truncated or corrupt, several frames, zero-sized axis, NaN or
            infinite voxels).
    """
    import torch
    import voxel as vx

    import vpcli.mgh  # noqa: F401 - .mgz through nibabel

    path = Path(path)
    if not path.exists():
        raise BadInputError(f'{path}: no such file')
    if path.is_dir():
        raise BadInputError(f'{path}: is a folder, not a scan file')
    if volume_suffix(path) is None:
        raise BadInputError(f'{path}: not a NIfTI (.nii, .nii.gz) or MGH (.mgz, .mgh) file')
    if path.stat().st_size == 0:
        raise BadInputError(f'{path}: file is empty')
    try:
        volume = vx.load_volume(path)
    except (EOFError, zlib.error, OSError, ValueError, RuntimeError, TypeError, KeyError,
            IndexError, MemoryError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadInputError(f'{path}: cannot be read as a volume, truncated or corrupt ({reason})') \
            from None
    except Exception as error:  # noqa: BLE001 - any reader failure is the file's problem
        raise BadInputError(f'{path}: cannot be read as a volume ({type(error).__name__}: {error})') \
            from None

    if any(int(n) == 0 for n in volume.baseshape):
        raise BadInputError(f'{path}: has a zero-sized axis (shape {tuple(volume.baseshape)})')
    if volume.num_channels != 1:
        raise BadInputError(f'{path}: is 4D with {volume.num_channels} frames; give one 3D volume '
                            f'per file (e.g. split the frames first)')

    tensor = volume.tensor
    integer = not (tensor.is_floating_point() or tensor.is_complex())
    if tensor.is_complex():
        raise BadInputError(f'{path}: complex-valued voxels are not supported')
    if not integer:
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise BadInputError(f'{path}: has {bad} NaN or infinite voxels')
    keep_integer = integer if label_map is None else label_map
    if keep_integer:
        if not integer:
            if not torch.equal(tensor, tensor.round()):
                raise BadInputError(f'{path}: label map has non-integer values')
        tensor = tensor.to(torch.int32) if tensor.dtype not in (torch.int32, torch.int64) \
            else tensor
    else:
        tensor = tensor.to(torch.float32)
    if tensor is not volume.tensor:
        volume = volume.new(tensor)
    return volume


def load_scans(paths: Sequence[os.PathLike | str]) -> list[Scan]:
    """Read input scans in the order given and name them ``img0``, ``img1``, ...

    Each file is validated (see :func:`load_volume`); label maps (BIDS ``dseg``,
    FreeSurfer ``aseg``...) keep integer values, everything else becomes float32.
    """
    scans = []
    for index, raw in enumerate(paths):
        path = Path(raw)
        sidecar = read_sidecar(path) if path.exists() else {}
        meta = infer_metadata(path, sidecar)
        label_map = True if meta['modality'] == 'labelmap' else None
        volume = load_volume(path, label_map=label_map)
        if meta['modality'] != 'labelmap' and not volume.tensor.is_floating_point():
            import torch
            volume = volume.new(volume.tensor.to(torch.float32))
        name = f'img{index}'
        scans.append(Scan(volume=volume, name=name, path=path, sha256=file_sha256(path),
                          sources=(SourceRef(name, path.name),), **meta))
    return scans


# -----------------------------------------------------------------------------
# saving
# -----------------------------------------------------------------------------

def current_umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    current = os.umask(0)
    os.umask(current)
    return current


def json_ready(value):
    """A value as JSON can hold it: dicts, tuples and lists recursively, numpy scalars as
    Python numbers, NaN and infinities as null (docs/outputs.md: null means not finite),
    other objects as their text. The project's one JSON sanitizer."""
    import math

    import numpy as np
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _publish(temporary: str, path: Path) -> None:
    """Give a finished temporary file normal permissions and move it into place."""
    os.chmod(temporary, 0o666 & ~current_umask())
    os.replace(temporary, path)


def save_volume(volume: 'vx.Volume', path: os.PathLike | str) -> Path:
    """Write a volume atomically (temporary file in the same folder, then rename).

    Boolean volumes are written as uint8. The header geometry of the scan a volume
    came from is kept (``voxel`` reuses the original header when the grid matches).
    """
    import voxel as vx

    import vpcli.mgh  # noqa: F401 - .mgz through nibabel

    path = Path(path)
    ending = volume_suffix(path)
    if ending is None:
        raise BadInputError(f'{path}: output must end in one of {", ".join(VOLUME_SUFFIXES)}')
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=ending, dir=path.parent)
    os.close(handle)
    try:
        vx.save_volume(volume.detach().cpu(), temporary)
        _publish(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: os.PathLike | str, text: str) -> Path:
    """Write a text file atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(handle, 'w') as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        _publish(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


#: world matrices closer than this (mm, each entry) are one grid: NIfTI stores them in float32
GRID_TOLERANCE_MM = 1e-3


def same_geometry(a: 'vx.AcquisitionGeometry', b: 'vx.AcquisitionGeometry') -> bool:
    """True when two geometries share shape and voxel-to-world matrix (within
    :data:`GRID_TOLERANCE_MM`); the one grid comparison of the project (``voxel``'s)."""
    import voxel as vx
    return bool(vx.geometries_equal(a.to('cpu'), b.to('cpu'), tol=GRID_TOLERANCE_MM))


def voxel_spacing_mm(geometry: 'vx.AcquisitionGeometry | np.ndarray') -> 'np.ndarray':
    """Distance between neighbouring voxel centres along each voxel axis (mm), float64: the
    column norms of the voxel-to-world matrix, right on sheared grids too (``voxel``'s
    ``geometry.spacing`` is QR-based and differs there). The project's one definition of
    voxel size; ``geometry`` may also be the 4x4 voxel-to-world matrix as a numpy array.
    ``voxel``'s spacing is used only where ``voxel`` reads it in its own units: pooling
    decisions in ``vpcli.vision.layers`` and the resample target in ``vpcli.vision.preprocess``."""
    import numpy as np
    if hasattr(geometry, 'tensor'):
        geometry = geometry.tensor.double().cpu().numpy()
    return np.linalg.norm(np.asarray(geometry, dtype=np.float64)[:3, :3], axis=0)


def same_grid(a: 'vx.Volume', b: 'vx.Volume') -> bool:
    """True when two volumes lie on one grid (:func:`same_geometry`)."""
    return same_geometry(a.geometry, b.geometry)


def union_sources(*groups: Iterable[SourceRef]) -> tuple[SourceRef, ...]:
    """Merge source lists, keeping first-seen order and dropping repeats."""
    seen: dict[SourceRef, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return tuple(seen)


def value_text(value: object, digits: int | None = None) -> str:
    """Plain text for a program value, safe for any object.

    Numbers print with ``digits`` significant digits (None: Python's shortest exact
    form), scans by variable name, masks by
    description, dates as ISO dates; other objects only by their type name, so that text
    conversion never runs an object's own ``__str__``/``__format__``.
    """
    if value is None or isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if digits is None else f'{value:.{digits}g}'
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Scan):
        return value.name
    if isinstance(value, Mask):
        return f'mask "{value.description}"'
    if isinstance(value, (list, tuple)):
        inner = ', '.join(value_text(v, digits) for v in value[:1000])
        more = ', ...' if len(value) > 1000 else ''
        trailing = ',' if isinstance(value, tuple) and len(value) == 1 else ''
        return f'({inner}{more}{trailing})' if isinstance(value, tuple) else f'[{inner}{more}]'
    return f'<{type(value).__name__}>'
