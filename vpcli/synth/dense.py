"""Batched synthesis in torch, on the training device, for the dense vision stage.

SynthSeg-style domain randomisation (VoxelPrompt App. C.5) written as batched tensor
operations, so that on CUDA the whole sample is made on the GPU and on the CPU it costs a
fraction of the network step. One call of :meth:`DenseSynthesizer.sample` makes ``batch``
training samples on an isotropic grid of ``spacing_mm`` (the network's working resolution):

1. **Geometry**: a random affine (rotation, scaling, shear, translation: the crop lands
   anywhere in the head) and a smooth random displacement field, composed into one sampling
   grid; a left-right mirror (the grid's x flips and left/right labels swap); and, with
   ``structure_scaling``, a few deep grey structures, ventricles or the brainstem of the
   source grown or shrunk on their own (a smooth radial expansion about each one's
   centroid, so that the relative sizes of structures vary as between people).
2. **Labels**: the source's 1 mm label map, sampled nearest-neighbour, as indices of the
   finest partition (:mod:`vpcli.vision.targets`); a partially labelled source
   (:mod:`vpcli.synth.colin`) adds group indices after the classes (``K + g``: one of the
   classes of group ``g``) and a complete generation map for the steps below.
3. **Intensities**: per class, a Gaussian whose mean is drawn fully at random (SynthSeg
   mode), from a modality's plausible tissue means (:data:`vpcli.synth.images.TISSUE_MEANS`),
   or the real intensities of the source's T1 image; smooth texture; outside the brain the
   source's head (skull, scalp) with random contrast.
4. **Lesions**: for half the samples, one or two leaf classes, each with its own count,
   volume range, start tissue and tissues it may grow into (the class tables of
   :mod:`vpcli.synth.lesions`); each lesion the class's rotated, elongated ellipsoid plus
   its roughness times smooth noise, thresholded so that it reaches its drawn volume inside
   the tissue it may occupy (a territorial infarct: one arterial territory's cortex and
   that side's white matter), as the evaluation world draws it; one channel per class.
   Their signal follows the class table for the
   sample's modality (a tissue-mean sample: a glioma hypointense on T1w, hyperintense on
   FLAIR; the table's isointense choices are left out, a lesion no scan shows cannot be
   learnt), or is hyper- or hypointense at random (a random-contrast sample); ratios to the
   surroundings as :data:`vpcli.synth.lesions.SIGNAL_RATIO_RANGES`. As in the evaluation
   world, tumour-like classes get an oedema in the white matter around them (the oedema
   channel) with the class's probability, painted first, and ring lesions a darker
   (fluid-bright modalities: brighter) necrotic core.
5. **Acquisition**: partial volume (blur), thick slices along a random axis (averaged and
   linearly re-expanded), a smooth multiplicative bias field, a gamma change and Gaussian
   noise; then the 0.5th-99.5th percentile normalisation the network applies to real scans
   (:func:`vpcli.vision.preprocess.prepare_scan`).
6. **Skull stripping** for some samples: everything outside the brain (grown by 0-2
   voxels) set to exactly 0, as stripping tools leave it.

Randomness comes from one ``torch.Generator`` on the device, so a run is reproducible on a
given device. Nothing here writes files.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from vpcli.synth.lesions import TERRITORY_CHOICES

#: MR modalities whose plausible tissue means drive the "tissue" intensity mode
MR_MODALITIES = ('T1w', 'T2w', 'FLAIR', 'PD', 'GRE', 'DWI')
#: arterial territories a territorial lesion fills (rows of ``territory_cortex``), and the
#: draw over them: the evaluation world's list (:data:`vpcli.synth.lesions.TERRITORY_CHOICES`)
TERRITORIES = tuple(dict.fromkeys(TERRITORY_CHOICES))
TERRITORY_DRAW = tuple(TERRITORIES.index(t) for t in TERRITORY_CHOICES)


@dataclasses.dataclass
class DenseBatch:
    """Synthesised training samples.

    Attributes:
        image: ``(B, 1, X, Y, Z)`` intensities in [0, 1].
        labels: ``(B, X, Y, Z)`` int64 indices of the finest partition (0 = background).
        lesions: ``(B, L, X, Y, Z)`` float lesion masks, one channel per lesion class.
        groups: ``(G, K)`` bool: a label ``K + g`` (a partially labelled voxel) is one of the
            classes ``groups[g]``; None when every label is a class.
    """
    image: torch.Tensor
    labels: torch.Tensor
    lesions: torch.Tensor
    groups: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class SynthesisSettings:
    """Ranges of the random draws (see the module docstring)."""
    spacing_mm: float = 2.0
    shape: tuple[int, int, int] = (64, 64, 64)
    max_rotation_deg: float = 15.0
    max_scaling: float = 0.12
    max_shear: float = 0.03
    max_displacement_mm: float = 4.0
    random_contrast_probability: float = 0.5
    template_probability: float = 0.2
    skull_stripped_probability: float = 0.35
    lesion_probability: float = 0.5
    thick_slice_probability: float = 0.3
    max_bias: float = 0.4
    max_noise: float = 0.05
    gca_draws: int = 6
    head_contrast_probability: float = 0.5
    field_of_view_probability: float = 0.15
    deface_probability: float = 0.15
    #: half-range of the log linear scale of each grown or shrunk structure (0: off; 0.2
    #: scales a structure's volume by 0.55-1.82 at its centre)
    structure_scaling: float = 0.0
    structure_scaling_probability: float = 0.7
    structures_scaled: int = 6


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return kernel / kernel.sum()


def smooth(volume: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, C, X, Y, Z)`` (sigma in voxels, replicate edges)."""
    if sigma_voxels <= 0.05:
        return volume
    kernel = _gaussian_kernel(sigma_voxels, volume.device)
    radius = (kernel.numel() - 1) // 2
    channels = volume.shape[1]
    out = volume
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = kernel.numel()
        weight = kernel.view(1, 1, *shape).repeat(channels, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode='replicate'), weight, groups=channels)
    return out


def radial_scaling(points: torch.Tensor, centres: torch.Tensor, widths: torch.Tensor,
                   strength: torch.Tensor) -> torch.Tensor:
    """Smooth radial maps of ``points`` (``(B, X, Y, Z, 3)`` mm), applied one after another:
    for each ``k``, ``c + (x - c) (1 - a w)`` with ``c = centres[:, k]`` (``(B, K, 3)``),
    ``a = strength[:, k]`` and ``w = exp(-|x - c|^2 / (2 widths[:, k]^2))``. Used as
    sampling coordinates, ``a > 0`` grows what lies about ``c`` by ``1 / (1 - a)`` at its
    centre and ``a < 0`` shrinks it; each map is one-to-one for ``-2.2 < a < 1``."""
    batch = points.shape[0]
    for k in range(centres.shape[1]):
        c = centres[:, k].view(batch, 1, 1, 1, 3)
        offset = points - c
        w = torch.exp(-0.5 * (offset ** 2).sum(-1, keepdim=True) / widths[:, k].view(batch, 1, 1, 1, 1) ** 2)
        points = c + offset * (1 - strength[:, k].view(batch, 1, 1, 1, 1) * w)
    return points


def smooth_noise(generator: torch.Generator, batch: int, channels: int, shape: Sequence[int],
                 coarse: int, device) -> torch.Tensor:
    """Smooth random fields ``(B, C, *shape)``: Gaussian noise on a ``coarse``^3 grid,
    upsampled with cubic-like (trilinear twice) smoothness; unit standard deviation."""
    noise = torch.randn((batch, channels, coarse, coarse, coarse), generator=generator, device=device)
    return F.interpolate(noise, size=tuple(shape), mode='trilinear', align_corners=True)


def head_sources(name: str, draws: int = 1, seed: int = 0) -> list:
    """A training source's label maps and head images, uncropped, so that samples can show
    the skull and scalp around the brain: ``(labels, head, generation)`` per anatomy, one
    for ``fsaverage`` and ``colin27``, ``draws`` for ``gca`` (each its own draw from the
    atlas priors). ``labels`` holds vocabulary ids and, for a partially labelled source
    (``colin27``; ``gca``'s midline white matter, which may be corpus callosum), group
    values (:mod:`vpcli.synth.colin`); ``generation`` is then the
    complete map that intensities and lesions are drawn from (else None: ``labels`` is).

    Raises:
        ValueError: ``name`` is not a training source (evaluation sources never train).
    """
    from vpcli.synth.sources import SOURCES, fold_to_vocabulary, fsaverage_file, gca_draw
    from vpcli.synth.vocabulary import load_vocabulary
    from vpcli.volumes import load_volume

    if SOURCES.get(name) not in ('train', 'train-dense'):
        raise ValueError(f'{name} is not a training anatomy source')
    if name == 'fsaverage':
        raw = load_volume(fsaverage_file('aparc+aseg.mgz'), label_map=True)
        labels = fold_to_vocabulary(raw, load_vocabulary())
        head = load_volume(fsaverage_file('T1.mgz'), label_map=False)
        return [(labels, head, None)]
    if name == 'gca':
        # the GCA has no corpus callosum: its midline white matter is partially labelled,
        # the draw itself generates intensities (vpcli.synth.gca.callosum_as_partial)
        from vpcli.synth.gca import callosum_as_partial
        out = []
        for draw in range(draws):
            labels, head = gca_draw(seed * 1000 + draw)
            out.append((callosum_as_partial(labels), head, labels))
        return out
    if name == 'colin27':
        from vpcli.synth.colin import colin_head
        return [colin_head()]
    raise ValueError(f'{name}: no head image loader')


#: head-outside-the-brain classes, by the source's T1 intensity (white matter = 1): air,
#: dark tissue (bone, CSF outside the brain), intermediate (muscle, skin, eyes), bright
#: (fat, marrow); each draws its own random intensity in the head-contrast mode
HEAD_CLASS_EDGES = (0.08, 0.35, 0.7)


def head_classes(template: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """Head classes 1..4 outside the brain (0 inside), from the head image's intensity."""
    edges = torch.tensor(HEAD_CLASS_EDGES, dtype=template.dtype, device=template.device)
    classes = torch.bucketize(template.contiguous(), edges) + 1
    return torch.where(brain, torch.zeros_like(classes), classes)


class DenseSynthesizer:
    """Makes batches of dense training samples from 1 mm label maps, on one device.

    Args:
        label_ids: FreeSurfer ids of the finest partition, in channel order (index i + 1).
        lesion_classes: Leaf lesion class keys, in channel order.
        device: Where sources live and samples are made.
        settings: Ranges of the random draws.
        sources: Training anatomy sources (:mod:`vpcli.synth.sources`, split ``train``).
        seed: Seed of the device generator.
    """

    def __init__(self, label_ids: Sequence[int], lesion_classes: Sequence[str],
                 device: torch.device | str = 'cpu', settings: SynthesisSettings | None = None,
                 sources: Sequence[str] = ('fsaverage',), seed: int = 0) -> None:
        from vpcli.synth.images import TISSUE_MEANS
        from vpcli.synth.vocabulary import PARENCHYMA_TISSUES, load_vocabulary
        from vpcli.volumes import voxel_spacing_mm

        self.device = torch.device(device)
        self.settings = settings or SynthesisSettings()
        self.label_ids = list(label_ids)
        self.lesion_classes = list(lesion_classes)
        from vpcli.synth.colin import GROUP_BASE, group_mirror, groups

        vocabulary = load_vocabulary()
        classes = len(self.label_ids) + 1
        position = {label_id: index + 1 for index, label_id in enumerate(self.label_ids)}
        position[0] = 0
        # partial labels (groups) follow the classes: index classes + g
        group_members = list(groups().values())
        lookup = torch.zeros(GROUP_BASE + len(group_members), dtype=torch.long)
        for label_id, index in position.items():
            lookup[label_id] = index
        members = torch.zeros(len(group_members), classes, dtype=torch.bool)
        for g, ids in enumerate(group_members):
            lookup[GROUP_BASE + g] = classes + g
            members[g, [position[i] for i in ids if i in position]] = True
        #: ``(G, K)`` the classes each group value (index K + g of ``labels``) may be
        self.group_members = members.to(self.device)
        mirror = torch.arange(classes + len(group_members))
        for label_id, other in vocabulary.lr_swap.items():
            if label_id in position and other in position:
                mirror[position[label_id]] = position[other]
        for value, other in group_mirror().items():
            mirror[lookup[value]] = lookup[other]
        self.mirror = mirror.to(self.device)
        tissues = ['background'] + [vocabulary.labels[i].tissue for i in self.label_ids]
        names = sorted(set(tissues))
        self.tissue_of = torch.tensor([names.index(t) for t in tissues], device=self.device)
        self.tissue_means = torch.tensor([[TISSUE_MEANS[m][t] for t in names] for m in MR_MODALITIES],
                                         dtype=torch.float32, device=self.device)
        self.parenchyma = torch.tensor([t in PARENCHYMA_TISSUES for t in tissues], device=self.device)
        if self.lesion_classes:
            self._lesion_priors(names)

        self.sources = []
        self.source_names = []
        drawn = [(name, entry) for name in sources
                 for entry in head_sources(name, self.settings.gca_draws, seed)]
        for name, (labels, head, generation) in drawn:
            self.source_names.append(name)
            labels = labels.reorient('RAS')
            indices = lookup[labels.tensor[0].long().clamp(0, lookup.numel() - 1)]
            if generation is not None:
                generation = lookup[generation.reorient('RAS').tensor[0].long()
                                    .clamp(0, lookup.numel() - 1)]
            template = None
            if head is not None:
                values = head.reorient('RAS').resample_like(labels.geometry, mode='linear').tensor[0]
                values = values.float()
                brain_values = values[indices > 0].numpy()
                # scaled so that the brain's bright end (white matter) is about 1
                template = values / float(np.percentile(brain_values[::5], 95))
            spacing = torch.from_numpy(voxel_spacing_mm(labels.geometry))
            head_class = None if template is None else head_classes(template, indices > 0)
            self.sources.append(dict(
                labels=indices.float()[None, None].to(self.device),
                generation=None if generation is None else
                generation.float()[None, None].to(self.device),
                template=None if template is None else template[None, None].to(self.device),
                head=None if head_class is None else head_class.float()[None, None].to(self.device),
                shape=torch.tensor(list(labels.baseshape), dtype=torch.float64),
                spacing=spacing,
                brain_center=(indices > 0).nonzero().double().mean(0),  # voxels
                **self._scalable_structures(indices, spacing)))
        #: indices of self.sources per source name, names sorted
        self._source_groups = [[k for k, n in enumerate(self.source_names) if n == name]
                               for name in sorted(set(self.source_names))]
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    #: tissues whose structures ``structure_scaling`` grows or shrinks on their own (the
    #: cortex, white matter and cerebellum are shaped by the affine and the displacement)
    SCALED_TISSUES = ('ventricle', 'thalamus', 'caudate', 'putamen', 'pallidum', 'hippocampus',
                      'amygdala', 'accumbens', 'ventral_dc', 'choroid_plexus', 'brainstem')

    def _scalable_structures(self, indices: torch.Tensor, spacing: torch.Tensor) -> dict:
        """A source's structures that ``structure_scaling`` may grow or shrink: their
        centroids (source mm, the sampling grid's units) and the radius (mm) of a sphere of
        their volume; none when scaling is off."""
        if self.settings.structure_scaling <= 0:
            return dict(scalable_centres=None, scalable_radii=None)
        from vpcli.synth.vocabulary import load_vocabulary
        vocabulary = load_vocabulary()
        chosen = [i + 1 for i, label_id in enumerate(self.label_ids)
                  if vocabulary.labels[label_id].tissue in self.SCALED_TISSUES]
        size = len(self.label_ids) + 1
        inside = torch.isin(indices, torch.tensor(chosen, dtype=indices.dtype))
        where = inside.nonzero().double()  # (N, 3) voxels of the chosen structures
        which = indices[inside]
        counts = torch.bincount(which, minlength=size).double()
        sums = torch.zeros(size, 3, dtype=torch.float64).index_add_(0, which, where)
        millilitres = counts * float(torch.prod(spacing)) / 1000.0
        keep = [i for i in chosen if millilitres[i] >= 0.05]
        if not keep:
            return dict(scalable_centres=None, scalable_radii=None)
        keep_t = torch.tensor(keep)
        centres = sums[keep_t] / counts[keep_t, None] * spacing.double()
        radii = (3 * millilitres[keep_t] * 1000.0 / (4 * math.pi)) ** (1 / 3)
        return dict(scalable_centres=centres.float().to(self.device),
                    scalable_radii=radii.float().to(self.device))

    def _scale_structures(self, source: dict, moved: torch.Tensor) -> torch.Tensor:
        """Grow or shrink a few structures of the source on their own: per sample (with
        ``structure_scaling_probability``) ``structures_scaled`` of them, each by a linear
        factor ``f = exp(u)``, ``u`` uniform in ``[-structure_scaling, structure_scaling]``,
        as a radial map of the source coordinates ``moved`` (``(B, X, Y, Z, 3)`` mm) about
        its centroid ``c``: ``c + (x - c) (1 - (1 - 1/f) w)``, ``w`` a Gaussian of the
        distance with the structure's sphere radius plus 2 mm as its width. Along every ray
        from ``c`` the map's derivative is ``1 - a w (1 - r^2 / width^2)`` with
        ``a = 1 - 1/f``, positive for ``-2.2 < a < 1`` (any ``f`` above 0.31), so each map is
        one-to-one and labels, intensities and the head move together without folding."""
        s = self.settings
        centres, radii = source.get('scalable_centres'), source.get('scalable_radii')
        if s.structure_scaling <= 0 or centres is None or s.structures_scaled <= 0:
            return moved
        batch = moved.shape[0]
        count = s.structures_scaled
        chosen = torch.randint(centres.shape[0], (batch, count), generator=self.generator,
                               device=self.device)
        factor = torch.exp(self._uniform(-s.structure_scaling, s.structure_scaling, batch, count))
        applied = (self._uniform(0, 1, batch) < s.structure_scaling_probability).float()
        strength = (1 - 1 / factor) * applied.view(batch, 1)  # (B, count)
        return radial_scaling(moved, centres[chosen], radii[chosen] + 2.0, strength)

    # ------------------------------------------------------------------ random draws
    def _uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.generator, device=self.device)

    def _sampling_grid(self, source: dict, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``grid_sample`` coordinates ``(B, X, Y, Z, 3)`` into the source and the mirror flags."""
        s = self.settings
        shape = s.shape
        device = self.device
        axes = [(torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2) * s.spacing_mm
                for n in shape]
        points = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1)  # (X, Y, Z, 3) mm
        angles = self._uniform(-s.max_rotation_deg, s.max_rotation_deg, batch, 3) * math.pi / 180
        scales = 1 + self._uniform(-s.max_scaling, s.max_scaling, batch, 3)
        shears = self._uniform(-s.max_shear, s.max_shear, batch, 3)
        matrices = []
        for b in range(batch):
            cx, cy, cz = torch.cos(angles[b])
            sx, sy, sz = torch.sin(angles[b])
            one, zero = torch.ones((), device=device), torch.zeros((), device=device)
            rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx]).view(3, 3)
            ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy]).view(3, 3)
            rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one]).view(3, 3)
            shear = torch.eye(3, device=device)
            shear[0, 1], shear[0, 2], shear[1, 2] = shears[b]
            matrices.append(rz @ ry @ rx @ shear @ torch.diag(scales[b]))
        linear = torch.stack(matrices)  # (B, 3, 3): output mm -> source mm
        spacing = source['spacing'].float().to(device)
        # the crop centre: anywhere in the head, so that crops also reach past the head and
        # the edge of the field of view (mm from the brain centre)
        reach = torch.tensor([40.0, 50.0, 45.0], device=device)
        offsets = self._uniform(-1, 1, batch, 3) * reach
        centre_mm = source['brain_center'].float().to(device) * spacing + offsets
        moved = torch.einsum('bij,xyzj->bxyzi', linear, points) + centre_mm.view(batch, 1, 1, 1, 3)
        # smooth displacement (mm), a few control points across the crop
        sigma = self._uniform(0, s.max_displacement_mm, batch, 1, 1, 1, 1)
        coarse = int(self._uniform(3, 7, 1).item())
        displacement = smooth_noise(self.generator, batch, 3, shape, coarse, device)
        moved = moved + displacement.permute(0, 2, 3, 4, 1) * sigma
        mirror = self._uniform(0, 1, batch) < 0.5
        # mirror about the brain centre's sagittal plane (x in RAS voxel axis 0)
        centre_x = source['brain_center'][0].float().item() * float(spacing[0])
        flipped_x = 2 * centre_x - moved[..., 0]
        moved[..., 0] = torch.where(mirror.view(batch, 1, 1, 1), flipped_x, moved[..., 0])
        moved = self._scale_structures(source, moved)  # about the source's own centroids
        voxel = moved / spacing  # source voxel coordinates (RAS canvas, axis-aligned)
        size = source['shape'].float().to(device)
        normalised = 2 * voxel / (size - 1) - 1
        # grid_sample's last axis is (W, H, D) = (z, y, x) of a (D=x, H=y, W=z) volume
        return normalised.flip(-1), mirror

    # ------------------------------------------------------------------------ sample
    @torch.no_grad()
    def sample(self, batch: int) -> DenseBatch:
        """``batch`` new samples (see the module docstring)."""
        # each named source equally often, then one of its draws
        groups = self._source_groups
        entries = groups[int(self._uniform(0, len(groups), 1).item()) % len(groups)]
        source = self.sources[entries[int(self._uniform(0, len(entries), 1).item()) % len(entries)]]
        grid, mirror = self._sampling_grid(source, batch)
        labels = F.grid_sample(source['labels'].expand(batch, -1, -1, -1, -1), grid, mode='nearest',
                               padding_mode='zeros', align_corners=True)[:, 0].long()
        labels = torch.where(mirror.view(batch, 1, 1, 1), self.mirror[labels], labels)
        # intensities, lesions, defacing and stripping follow the complete map
        generation = labels
        if source['generation'] is not None:
            generation = F.grid_sample(source['generation'].expand(batch, -1, -1, -1, -1), grid,
                                       mode='nearest', padding_mode='zeros',
                                       align_corners=True)[:, 0].long()
            generation = torch.where(mirror.view(batch, 1, 1, 1), self.mirror[generation],
                                     generation)
        template = head = None
        if source['template'] is not None:
            template = F.grid_sample(source['template'].expand(batch, -1, -1, -1, -1), grid,
                                     mode='bilinear', padding_mode='zeros', align_corners=True)
            head = F.grid_sample(source['head'].expand(batch, -1, -1, -1, -1), grid,
                                 mode='nearest', padding_mode='zeros', align_corners=True)[:, 0].long()
        image = self._intensities(generation, template, head)
        lesions = self._lesions(generation, image)
        image = self._acquire(image)
        image = self._deface(image, generation)
        image = self._strip(image, generation)
        image, labels, lesions = self._cut_field_of_view(image, labels, lesions)
        return DenseBatch(image=image, labels=labels, lesions=lesions, groups=self.group_members)

    def _deface(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Defacing as tools do it: the head in front of and below a plane that passes a
        few mm anterior-inferior of the brain set to 0 (output axes are RAS, up to the
        random rotation)."""
        batch = image.shape[0]
        chosen = self._uniform(0, 1, batch) < self.settings.deface_probability
        if not bool(chosen.any()):
            return image
        shape = labels.shape[1:]
        axes = [torch.arange(n, device=self.device, dtype=torch.float32) for n in shape]
        _, y, z = torch.meshgrid(*axes, indexing='ij')
        front = (y - z) * self.settings.spacing_mm  # mm towards anterior-inferior
        for b in chosen.nonzero().flatten().tolist():
            brain = labels[b] > 0
            if not bool(brain.any()):
                continue
            plane = front[brain].max() + float(self._uniform(2.0, 12.0, 1))
            face = (front > plane) & ~brain
            image[b, 0][face] = 0.0
        return image

    def _cut_field_of_view(self, image, labels, lesions):
        """A partial field of view (a slab missing the vertex, the cerebellum or a side):
        image, labels and lesions beyond a plane across the crop set to 0 -- what a scan
        that ends there shows, and nothing to segment."""
        batch = image.shape[0]
        chosen = self._uniform(0, 1, batch) < self.settings.field_of_view_probability
        if not bool(chosen.any()):
            return image, labels, lesions
        image, labels, lesions = image.clone(), labels.clone(), lesions.clone()
        for b in chosen.nonzero().flatten().tolist():
            axis = int(self._uniform(0, 3, 1).item()) % 3
            size = labels.shape[1 + axis]
            at = int(self._uniform(0.2 * size, 0.8 * size, 1).item())
            index = [slice(None)] * 3
            index[axis] = slice(at, None) if float(self._uniform(0, 1, 1)) < 0.5 else slice(0, at)
            index = tuple(index)
            image[b, 0][index] = 0.0
            labels[b][index] = 0
            lesions[b][(slice(None),) + index] = 0.0
        return image, labels, lesions

    def _strip(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Skull stripping as tools do it, after acquisition: everything outside a brain
        mask (the true one, grown by 0-2 voxels) set to exactly 0."""
        batch = image.shape[0]
        stripped = self._uniform(0, 1, batch) < self.settings.skull_stripped_probability
        if not bool(stripped.any()):
            return image
        brain = (labels > 0).float().unsqueeze(1)
        grow = int(self._uniform(0, 3, 1).item())
        if grow:
            brain = F.max_pool3d(brain, 2 * grow + 1, stride=1, padding=grow)
        keep = (brain > 0) | ~stripped.view(batch, 1, 1, 1, 1)
        return torch.where(keep, image, torch.zeros_like(image))

    def _intensities(self, labels: torch.Tensor, template: torch.Tensor | None,
                     head: torch.Tensor | None = None) -> torch.Tensor:
        s = self.settings
        batch = labels.shape[0]
        classes = self.tissue_of.numel()
        device = self.device
        # per sample and class: a random mean (SynthSeg), or a modality's tissue mean, jittered
        modality = torch.randint(len(MR_MODALITIES), (batch,), generator=self.generator, device=device)
        plausible = self.tissue_means[modality][:, self.tissue_of]  # (B, K)
        plausible = plausible * self._uniform(0.9, 1.1, batch, classes)
        random = self._uniform(0.0, 1.0, batch, classes)
        use_random = (self._uniform(0, 1, batch) < s.random_contrast_probability).view(batch, 1)
        #: per sample: the modality index, or -1 for a random-contrast sample (lesion signals)
        self._modality = torch.where(use_random.view(batch), -1, modality)
        means = torch.where(use_random, random, plausible)
        stds = means * self._uniform(0.01, 0.08, batch, classes)
        index = labels.view(batch, -1)
        mean_map = torch.gather(means, 1, index).view_as(labels).unsqueeze(1)
        std_map = torch.gather(stds, 1, index).view_as(labels).unsqueeze(1)
        texture = smooth(torch.randn(mean_map.shape, generator=self.generator, device=device), 0.7)
        texture = texture / texture.flatten(1).std(dim=1).clamp(min=1e-6).view(batch, 1, 1, 1, 1)
        image = mean_map + std_map * texture
        brain = (labels > 0).unsqueeze(1)
        if template is not None:
            # real T1 intensities: the whole image (head included) for some samples; the head
            # outside the brain, with a random contrast, for others
            use_template = (self._uniform(0, 1, batch) < s.template_probability).view(batch, 1, 1, 1, 1)
            image = torch.where(use_template, template * self._uniform(0.8, 1.2, batch, 1, 1, 1, 1),
                                image)
            self._modality = torch.where(use_template.view(batch), MR_MODALITIES.index('T1w'),
                                         self._modality)
            head_gain = self._uniform(0.0, 1.5, batch, 1, 1, 1, 1)
            outside = template * head_gain + 0.05 * head_gain * smooth_noise(
                self.generator, batch, 1, labels.shape[1:], 8, device)
            if head is not None:
                # the head label set with a random intensity per class (SynthSeg-style)
                head_means = self._uniform(0.0, 1.2, batch, len(HEAD_CLASS_EDGES) + 2)
                head_means[:, 0] = 0.0  # inside the brain: unused
                head_means[:, 1] = head_means[:, 1] * 0.1  # air stays dark
                by_class = torch.gather(head_means, 1, head.view(batch, -1)).view_as(head)
                by_class = by_class.unsqueeze(1) * (1 + 0.1 * texture)
                use_classes = (self._uniform(0, 1, batch) <
                               s.head_contrast_probability).view(batch, 1, 1, 1, 1)
                outside = torch.where(use_classes, by_class, outside)
            image = torch.where(brain | use_template, image, outside.clamp(min=0))
        return image

    def _lesion_priors(self, tissues: list[str]) -> None:  # tissues: sorted tissue names
        """Per lesion channel, where lesions of its class start and what they may occupy
        (class tables of :mod:`vpcli.synth.lesions`: placement, volume and count ranges)."""
        from vpcli.synth.lesions import lesion_classes
        from vpcli.tasks.ontology import load_ontology

        ontology = load_ontology()
        table = lesion_classes()
        deep = {'thalamus', 'caudate', 'putamen', 'pallidum'}
        is_parenchyma = self.parenchyma.cpu().tolist()
        start_sets = {
            'white_matter': {'cerebral_wm'}, 'periventricular': {'cerebral_wm'},
            'grey_white_junction': {'cortex'}, 'territory': {'cortex'}, 'surface': {'cortex'},
            'deep_grey': deep, 'parenchyma': None, 'ventricular': {'ventricle'}}
        occupy_sets = {
            'white_matter': {'cerebral_wm'}, 'periventricular': {'cerebral_wm'},
            'grey_white_junction': {'cortex', 'cerebral_wm'}, 'territory': {'cortex', 'cerebral_wm'},
            'surface': {'cortex', 'csf'}, 'deep_grey': None, 'parenchyma': None,
            'ventricular': {'ventricle', 'csf', 'choroid_plexus'}}
        tissue_names = [tissues[int(i)] for i in self.tissue_of.cpu()]
        starts, occupies, volumes, counts = [], [], [], []
        #: per channel and modality: the visible signals of the class table ('hyper',
        #: 'hypo'; empty: either, at random); oedema probability and ring probability
        self.lesion_signals, self.lesion_oedema, self.lesion_ring = [], [], []
        synth_names = [ontology.lesion_classes[key].synth for key in self.lesion_classes]
        self.oedema_channel = synth_names.index('oedema') if 'oedema' in synth_names else None
        self.cerebral_wm = torch.tensor([name == 'cerebral_wm' for name in tissue_names],
                                        device=self.device)
        for synth_name in synth_names:
            spec = table[synth_name]
            placement = spec['placement']
            self.lesion_signals.append([[v for v in spec['signal'].get(m, []) if v != 'iso']
                                        for m in MR_MODALITIES])
            brings_oedema = self.oedema_channel is not None and synth_name != 'oedema'
            self.lesion_oedema.append(float(spec['oedema'][0]) if brings_oedema else 0.0)
            self.lesion_ring.append(float(spec['ring']))

            def mask(allowed):
                return torch.tensor([is_parenchyma[k] if allowed is None else name in allowed
                                     for k, name in enumerate(tissue_names)], device=self.device)
            starts.append(mask(start_sets[placement]))
            occupies.append(mask(occupy_sets[placement]))
            volumes.append(tuple(float(v) for v in spec['volume_ml']))
            counts.append((int(spec['count'][0]), min(int(spec['count'][1]), 6)))
        self.lesion_start = torch.stack(starts)  # (L, K) bool
        self.lesion_occupy = torch.stack(occupies)
        self.lesion_volumes_ml = volumes
        self.lesion_counts = counts
        #: per channel the class table's shape: roughness, elongation range, and whether it
        #: fills an arterial territory of one hemisphere
        self.lesion_roughness = [float(table[n]['roughness']) for n in synth_names]
        self.lesion_elongation = [tuple(float(v) for v in table[n]['elongation'])
                                  for n in synth_names]
        self.lesion_territorial = [table[n]['placement'] == 'territory' for n in synth_names]
        # per class index: its side (0 midline or background, 1 left, 2 right) and, for
        # cortex, its arterial territory (rows MCA, ACA, PCA) as the evaluation world has them
        from vpcli.synth.vocabulary import load_vocabulary
        vocabulary = load_vocabulary()
        infos = [None] + [vocabulary.labels[i] for i in self.label_ids]
        self.side_of = torch.tensor([0 if info is None else {'left': 1, 'right': 2}.get(info.side, 0)
                                     for info in infos], device=self.device)
        self.territory_cortex = torch.tensor(
            [[info is not None and info.tissue == 'cortex' and f'territory:{t}' in info.groups
              for info in infos] for t in TERRITORIES], device=self.device)

    def _lesions(self, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Paint lesions into ``image`` in place; their masks, one channel per class.

        Per sample with lesions, one or two classes; per class its own number of lesions,
        sizes (volume drawn log-uniformly in the class's range), start tissue and the
        tissues it may grow into, so that channels can be told apart by where and how
        lesions look, as in :mod:`vpcli.synth.lesions`."""
        s = self.settings
        batch = labels.shape[0]
        shape = labels.shape[1:]
        device = self.device
        masks = torch.zeros((batch, len(self.lesion_classes), *shape), device=device)
        if not self.lesion_classes:
            return masks
        axes = [torch.arange(n, device=device, dtype=torch.float32) for n in shape]
        coordinates = torch.stack(torch.meshgrid(*axes, indexing='ij'))  # (3, X, Y, Z) voxels
        for b in range(batch):
            if float(self._uniform(0, 1, 1)) >= s.lesion_probability:
                continue
            for _ in range(int(self._uniform(1, 3, 1).item())):
                channel = int(self._uniform(0, len(self.lesion_classes), 1).item()) % len(self.lesion_classes)
                if not bool(self.lesion_start[channel][labels[b]].any()):
                    continue
                occupy = self.lesion_occupy[channel][labels[b]]
                low, high = self.lesion_counts[channel]
                low_ml, high_ml = self.lesion_volumes_ml[channel]
                for _ in range(int(self._uniform(low, high + 1, 1).item())):
                    taken = masks[b].amax(0) > 0
                    if self.lesion_territorial[channel]:
                        start, allowed = self._territory(labels[b])
                        start = start & ~taken
                    else:
                        start = self.lesion_start[channel][labels[b]] & ~taken
                        allowed = occupy
                    candidates = start.nonzero()
                    if len(candidates) == 0:
                        continue
                    pick = int(self._uniform(0, len(candidates), 1).item()) % len(candidates)
                    centre = candidates[pick].float()
                    volume_ml = math.exp(float(self._uniform(math.log(low_ml), math.log(high_ml), 1)))
                    field = self._lesion_field(coordinates, centre, volume_ml, channel)
                    blob = self._fill(field, allowed & ~taken, volume_ml)
                    if int(blob.sum()) < 1:
                        continue
                    masks[b, channel] = torch.maximum(masks[b, channel], blob.float())
                    surround = image[b, 0][blob].mean()
                    if float(self._uniform(0, 1, 1)) < self.lesion_oedema[channel]:
                        # oedema around it: 1.4-2.2 times its size across, in the white
                        # matter (painted first, so the lesion is painted relative to it, as
                        # in the evaluation world)
                        scale = float(self._uniform(1.4, 2.2, 1))
                        lesion_ml = float(blob.sum()) * s.spacing_mm ** 3 / 1000
                        middle = blob.nonzero().float().mean(0)
                        channel_o = self.oedema_channel
                        field_o = self._lesion_field(coordinates, middle, lesion_ml * scale ** 3,
                                                     channel_o)
                        grown = self._fill(field_o, (self.cerebral_wm[labels[b]] & ~taken) | blob,
                                           lesion_ml * scale ** 3)
                        oedema = grown & ~blob
                        if int(oedema.sum()) >= 4:
                            masks[b, channel_o] = torch.maximum(masks[b, channel_o], oedema.float())
                            self._paint(image[b, 0], oedema, channel_o, int(self._modality[b]))
                            surround = image[b, 0][oedema].mean()
                    self._paint(image[b, 0], blob, channel, int(self._modality[b]), surround,
                                field)
        return masks

    def _territory(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A territorial lesion's start voxels and the voxels it may fill: the cortex of
        one arterial territory on one side (drawn as the evaluation world draws them) and
        that side's cerebral white matter."""
        row = TERRITORY_DRAW[int(self._uniform(0, len(TERRITORY_DRAW), 1).item()) % len(TERRITORY_DRAW)]
        side = 1 + int(self._uniform(0, 2, 1).item()) % 2
        same_side = self.side_of[labels] == side
        start = self.territory_cortex[row][labels] & same_side
        allowed = start | (self.cerebral_wm[labels] & same_side)
        return start, allowed

    def _lesion_field(self, coordinates: torch.Tensor, centre: torch.Tensor, volume_ml: float,
                      channel: int) -> torch.Tensor:
        """The class table's shape field around ``centre`` (voxels): a randomly rotated
        ellipsoid elongated along one axis, ``1 - |A(x - c)|^2``, plus the class's
        roughness times smooth noise of about the lesion's own scale, as
        :func:`vpcli.synth.lesions.draw_lesion_plan` draws it."""
        s = self.settings
        radius = (3 * volume_ml * 1000 / (4 * math.pi)) ** (1 / 3) / s.spacing_mm  # voxels
        low, high = self.lesion_elongation[channel]
        elongation = float(self._uniform(low, high, 1))
        axes = radius * torch.tensor([elongation, 1.0, 1.0], device=self.device) / elongation ** (1 / 3)
        q, r = torch.linalg.qr(torch.randn((3, 3), generator=self.generator, device=self.device))
        rotation = q * torch.sign(torch.diagonal(r))
        offsets = (coordinates - centre.view(3, 1, 1, 1)).flatten(1)  # (3, N)
        local = (rotation @ offsets) / axes.view(3, 1)
        shape = coordinates.shape[1:]
        extent = max(shape) / max(radius, 1.0)
        coarse = int(min(max(round(extent), 4), 16))
        noise = smooth_noise(self.generator, 1, 1, shape, coarse, self.device)[0, 0]
        noise = noise / noise.std().clamp(min=1e-6)
        return 1 - (local ** 2).sum(0).view(shape) + self.lesion_roughness[channel] * noise

    def _fill(self, field: torch.Tensor, allowed: torch.Tensor, volume_ml: float) -> torch.Tensor:
        """The lesion: ``field`` thresholded so that its allowed part reaches ``volume_ml``
        (threshold at least -0.5), as the evaluation world thresholds it."""
        values = field[allowed]
        if values.numel() < 4:
            return torch.zeros_like(allowed)
        voxels = max(int(round(volume_ml * 1000 / self.settings.spacing_mm ** 3)), 4)
        voxels = min(voxels, values.numel())
        threshold = max(float(torch.topk(values, voxels).values[-1]), -0.5)
        return (field >= threshold) & allowed

    def _paint(self, image: torch.Tensor, blob: torch.Tensor, channel: int, modality: int,
               surround: torch.Tensor | None = None, field: torch.Tensor | None = None) -> None:
        """Paint one lesion into ``image`` (in place): its class's signal for the
        modality (``-1``: random contrast) relative to ``surround`` (default: the mean
        there now), an 8 % texture and, for a ring lesion, a necrotic core."""
        from vpcli.synth.lesions import _FLUID_BRIGHT, SIGNAL_RATIO_RANGES
        options = self.lesion_signals[channel][modality] if modality >= 0 else []
        if options:
            signal = options[int(self._uniform(0, len(options), 1).item()) % len(options)]
        else:
            signal = 'hyper' if float(self._uniform(0, 1, 1)) < 0.6 else 'hypo'
        low, high = SIGNAL_RATIO_RANGES[signal]
        ratio = float(self._uniform(low, high, 1))
        if surround is None:
            surround = image[blob].mean()
        count = int(blob.sum())
        values = surround * ratio * (1 + 0.08 * torch.randn(count, generator=self.generator,
                                                             device=self.device))
        if field is not None and float(self._uniform(0, 1, 1)) < self.lesion_ring[channel]:
            inside = field[blob]
            core = inside > torch.quantile(inside, float(self._uniform(0.55, 0.8, 1)))
            necrotic = float(self._uniform(0.6, 0.85, 1))
            fluid_bright = modality >= 0 and MR_MODALITIES[modality] in _FLUID_BRIGHT
            if fluid_bright or (modality < 0 and float(self._uniform(0, 1, 1)) < 0.5):
                necrotic = 1 / necrotic
            values = torch.where(core, values * necrotic, values)
        image[blob] = values

    def _acquire(self, image: torch.Tensor) -> torch.Tensor:
        s = self.settings
        batch = image.shape[0]
        shape = image.shape[2:]
        device = self.device
        out = []
        for b in range(batch):
            one = image[b:b + 1]
            one = smooth(one, float(self._uniform(0.2, 1.0, 1)))  # partial volume, blur
            if float(self._uniform(0, 1, 1)) < s.thick_slice_probability:
                axis = int(self._uniform(0, 3, 1).item()) % 3
                factor = int(self._uniform(2, 4, 1).item())
                kernel = [1, 1, 1]
                kernel[axis] = factor
                thick = F.avg_pool3d(one, kernel, stride=kernel, ceil_mode=True)
                one = F.interpolate(thick, size=tuple(shape), mode='trilinear', align_corners=False)
            out.append(one)
        image = torch.cat(out)
        bias = smooth_noise(self.generator, batch, 1, shape, 4, device)
        image = image * torch.exp(bias * self._uniform(0, s.max_bias, batch, 1, 1, 1, 1))
        image = image.clamp(min=0)
        peak = image.flatten(1).amax(dim=1).clamp(min=1e-6).view(batch, 1, 1, 1, 1)
        gamma = torch.exp(self._uniform(-0.3, 0.3, batch, 1, 1, 1, 1))
        image = peak * (image / peak) ** gamma
        noise = self._uniform(0, s.max_noise, batch, 1, 1, 1, 1) * peak
        image = (image + noise * torch.randn(image.shape, generator=self.generator, device=device)).clamp(min=0)
        # the network's own normalisation (prepare_scan): robust range to [0, 1]
        flat = image.flatten(1)
        sample = flat[:, ::7]
        low = torch.quantile(sample, 0.005, dim=1).view(batch, 1, 1, 1, 1)
        high = torch.quantile(sample, 0.995, dim=1).view(batch, 1, 1, 1, 1)
        return ((image - low) / (high - low).clamp(min=1e-6)).clamp(0, 1)
