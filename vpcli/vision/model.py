"""The vision network m = (m_enc, m_gen): native resolution, φ-conditioned, any number of scans.

Paper mapping (VoxelPrompt v2 §3.1 and App. A.3; v1 §3.1 and App. A.1):

- each input scan is a *stream* that keeps its own geometry through the network;
- every level: 3x3x3 convolution (3x3x1 where slice/in-plane spacing ratio > 2),
  SiLU, GroupNorm (groups of 4 channels), φ mixing, and below the top level attention
  across streams on a shared grid;
- max pooling by 2 that leaves the slice axis alone while the ratio is > 2
  (``voxel``'s ``pool(..., spacing_ratio_thresh=2)``), trilinear upsampling to the
  skip connection's geometry;
- ``encode`` runs the encoder once (features per level + ε per scan), each ``segment``
  runs the generator with its own φ; sigmoid, and a max over the scans of a session.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import voxel as vx
from torch import nn
from torch.nn import functional as F

from vpcli.errors import BadInputError, ProgramError
from vpcli.run_context import FeedbackItem
from vpcli.vision.config import VisionConfig
from vpcli.vision.layers import LesionHead, LevelBlock, Pointwise, upsample
from vpcli.vision.preprocess import PreparedScan, prepare_scan
from vpcli.vision.targets import target_key
from vpcli.quality import mask_signals
from vpcli.volumes import Mask, union_sources

if TYPE_CHECKING:
    from vpcli.volumes import Scan


def calibrated_softmax(logits: torch.Tensor, offsets: torch.Tensor,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """The anatomical softmax of ``logits`` (``(K, ...)``, background first) with the label
    channels' ``offsets`` (``offsets[0]`` is ignored): the background keeps its probability,
    so the brain's outer edge never moves, and the labels share the rest as a softmax of
    their offset logits.

    With ``out`` (``(K, ...)``, the dtype of ``logits``; not for logits that need a
    gradient) the result is written there and the labels' softmax is computed in place, so
    a run holds one copy of the probabilities, not three; the background then comes from a
    log-sum-exp, ``p0 = 1 - sigmoid(logsumexp(l1..) - l0)``."""
    if not bool(offsets[1:].any()):
        probabilities = logits.softmax(0)
        return probabilities if out is None else out.copy_(probabilities)
    shape = (-1,) + (1,) * (logits.dim() - 1)
    offsets = offsets[1:].to(logits).view(shape)
    if out is None:
        probabilities = logits.softmax(0)
        labels = (logits[1:] + offsets).softmax(0) * (1 - probabilities[:1])
        return torch.cat([probabilities[:1], labels])
    rest = torch.sigmoid(torch.logsumexp(logits[1:], 0) - logits[0])   # 1 - p0
    torch.sub(1.0, rest, out=out[0])
    labels = torch.add(logits[1:], offsets, out=out[1:])
    labels.sub_(labels.amax(0, keepdim=True)).exp_()
    labels.mul_((rest / labels.sum(0)).unsqueeze(0))
    return out


def phi_matrix(phi: Any, count: int, size: int, device: torch.device | str = 'cpu') -> torch.Tensor:
    """Latent instructions φ as a ``(count, size)`` tensor, one row per volume stream.

    Args:
        phi: None (zeros), one ``size``-vector (the same φ for every stream), or one
            ``size``-vector per stream (a list, or a ``(count, size)`` tensor/array).
            Tensors keep their autograd graph.
        count: Number of streams.
        size: Length of one φ vector.
        device: Where the result lives.

    Raises:
        ProgramError: ``phi`` has another shape or non-numeric entries.
    """
    if phi is None:
        return torch.zeros(count, size, device=device)
    try:
        if torch.is_tensor(phi):
            matrix = phi
        elif isinstance(phi, (list, tuple)) and phi and all(torch.is_tensor(p) for p in phi):
            matrix = torch.stack([p.reshape(-1) for p in phi])
        else:
            matrix = torch.as_tensor(phi, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ProgramError(f'phi must be numbers: one {size}-vector or one per scan ({error})') \
            from None
    matrix = matrix.to(device=device, dtype=torch.float32)
    if matrix.ndim == 1 and matrix.shape[0] == size:
        return matrix.unsqueeze(0).expand(count, size)
    if matrix.ndim == 2 and tuple(matrix.shape) == (count, size):
        return matrix
    raise ProgramError(f'phi has shape {tuple(matrix.shape)}; expected one {size}-vector or '
                       f'{count} of them (one per scan)')


def session_groups(scans: Sequence['Scan']) -> list[list[int]]:
    """Indices of the scans of each session, sessions in time order.

    Scans with equal ``session`` labels form a session (scans without a label form one
    shared session). Sessions are sorted by their earliest acquisition date when every
    session has one, else kept in the order they first appear.
    """
    groups: dict[str | None, list[int]] = {}
    for index, scan in enumerate(scans):
        groups.setdefault(scan.session, []).append(index)
    ordered = list(groups.values())
    dates = [min((scans[i].date for i in group if scans[i].date is not None), default=None)
             for group in ordered]
    if all(date is not None for date in dates):
        ordered = [group for _, group in sorted(zip(dates, ordered), key=lambda pair: pair[0])]
    return ordered


@dataclasses.dataclass(eq=False)
class SegmentationRecord:
    """One ``segment`` call made while the network trains (for the soft-Dice loss).

    Attributes:
        target: The target text the program named.
        phi: ``(n, phi_size)`` generator φ (with its autograd graph).
        probabilities: Per session (in :func:`session_groups` order) the max-merged
            probability volume on the session's first scan grid, before thresholding.
        masks: The masks ``segment`` returned.
    """
    target: str
    phi: torch.Tensor
    probabilities: list[vx.Volume]
    masks: tuple[Mask, ...]


@dataclasses.dataclass(eq=False)
class Encoding:
    """What ``encode`` returns: encoder features of every scan, kept for ``segment``.

    Attributes:
        scans: The encoded scans, in call order.
        prepared: Each scan as the network saw it (normalised, RAS, cropped).
        features: ``features[level][stream]``: ``(C, X, Y, Z)`` encoder outputs.
        geometries: ``geometries[level][stream]``: their voxel -> scanner RAS mm grids.
        embeddings: ε, ``(n_scans, embedding_width)``: global max pool of the deepest
            level through a fully connected layer.
        phi: ``(n_scans, phi_size)`` encoder φ.
        segmentations: Records of ``segment`` calls made in training mode.
        dense: Dense networks: per stream the class probabilities (made once, on first use).
        nearest_parcels: Dense networks: per stream the channel of the nearest predicted
            cortical parcel of every voxel (made once, for lobes and territories).
        refined: Dense networks with intensity refinement: per stream the anatomical
            posterior at the scan's own resolution (made once, on first use).
        brains: Dense networks: per session the whole brain's probabilities, for the
            side check of ``left``/``right`` targets' QC (made once, on first use).
        region_masks: Masks of regions that lesion descriptions are placed in, by region
            name, per session (:mod:`vpcli.library.lesion_choice`; made once each).
        heads: Dense networks with atlas centroids: per session the head size estimate
            (:func:`vpcli.vision.head_size.estimate`, or None), made once, on first use.
        lesion_components: Dense networks with ``lesion_decoding = "component"``: per
            stream the leaf lesion channels with each connected lesion given to one class
            (made once, on first use).
    """
    scans: tuple['Scan', ...]
    prepared: tuple[PreparedScan, ...]
    features: list[list[torch.Tensor]]
    geometries: list[list[vx.AcquisitionGeometry]]
    embeddings: torch.Tensor
    phi: torch.Tensor
    segmentations: list[SegmentationRecord] = dataclasses.field(default_factory=list)
    dense: list[torch.Tensor] | None = None
    nearest_parcels: dict | None = None
    refined: list | None = None
    brains: list | None = None
    region_masks: dict = dataclasses.field(default_factory=dict)
    heads: list | None = None
    lesion_components: dict | None = None

    def __str__(self) -> str:
        return f'Encoding({", ".join(scan.name for scan in self.scans)})'

    __repr__ = __str__

    @property
    def sessions(self) -> list[list[int]]:
        """Stream indices per session, in time order (see :func:`session_groups`)."""
        return session_groups(self.scans)

    def to_feedback(self) -> FeedbackItem:
        """What ``read(enc)`` hands to the language model: one ε row per scan."""
        names = ', '.join(scan.name for scan in self.scans)
        return FeedbackItem(text=f'encoding of {names}', embeddings=self.embeddings.detach())


def _mirrored(prepared: PreparedScan) -> PreparedScan:
    """A prepared (RAS) scan mirrored left-right: voxel axis 0 reversed, on a grid mirrored
    about the world plane x = 0, so that several scans stay aligned with each other."""
    volume = prepared.volume
    matrix = volume.geometry.tensor.double()
    voxel_flip = torch.eye(4, dtype=torch.float64, device=matrix.device)
    voxel_flip[0, 0], voxel_flip[0, 3] = -1.0, float(volume.baseshape[0] - 1)
    world_flip = torch.eye(4, dtype=torch.float64, device=matrix.device)
    world_flip[0, 0] = -1.0
    geometry = vx.AcquisitionGeometry(volume.baseshape,
                                      (world_flip @ matrix @ voxel_flip).to(volume.geometry.tensor.dtype))
    return dataclasses.replace(prepared, volume=vx.Volume(volume.tensor.flip(1), geometry))


class VisionNetwork(nn.Module):
    """Encoder/generator UNet over any number of scans at native resolution.

    Args:
        config: Levels, widths, φ and attention sizes; weights are initialised from
            ``config.seed`` without touching the global random state.
    """

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        widths, levels = config.widths, config.levels

        def block(in_channels: int, level: int) -> LevelBlock:
            return LevelBlock(in_channels, widths[level], config.phi_size, config.group_size,
                              config.attention_size, level >= config.interaction_from_level,
                              config.anisotropy_threshold, config.phi_mixing)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.encoder = nn.ModuleList(
                block(1 if level == 0 else widths[level - 1], level) for level in range(levels))
            # the generator starts with a block at the deepest level so its φ reaches the
            # coarsest (most global) features too
            self.bottleneck = block(widths[-1], levels - 1)
            self.decoder = nn.ModuleList(
                block(widths[level + 1] + widths[level], level) for level in range(levels - 1))
            self.head = Pointwise(widths[0], config.output_channels)
            self.embed = nn.Linear(widths[-1], config.embedding_width)
            #: dense networks with ``lesion_head_width``: the lesion channels' own head
            #: (the pointwise head's lesion rows are then unused)
            self.lesion_head = LesionHead(widths[0] + 1, config.lesion_head_width,
                                          len(config.lesion_classes), config.group_size) \
                if config.dense and config.lesion_head_width and config.lesion_classes else None

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.head.weight.device

    # ---------------------------------------------------------------- encoder
    def encode(self, scans: Sequence['Scan'], phi: Any = None) -> Encoding:
        """Run the encoder once over a set of scans.

        Args:
            scans: One or more input scans (any shapes, spacings, orientations).
            phi: Encoder φ: None, one vector, or one vector per scan (see
                :func:`phi_matrix`).

        Returns:
            The :class:`Encoding` (features per level and stream, ε per scan).
        """
        if not scans:
            raise ProgramError('encode needs at least one scan')
        isotropic = self.config.dense and self.config.isotropic_working_grid and not self.training
        prepared = [prepare_scan(scan, self.config, self.device, refinement=self.refines(),
                                 isotropic=isotropic) for scan in scans]
        return self.encode_prepared(prepared, phi)

    def encode_prepared(self, prepared: Sequence[PreparedScan], phi: Any = None) -> Encoding:
        """:meth:`encode` on scans already passed through :func:`prepare_scan`."""
        phi = phi_matrix(phi, len(prepared), self.config.phi_size, self.device)
        streams = [p.volume.tensor.to(self.device) for p in prepared]
        geometries = [p.volume.geometry.to(self.device) for p in prepared]
        features, level_geometries = [], []
        for level, block in enumerate(self.encoder):
            if level > 0:
                streams, geometries = self._pool(streams, geometries)
            streams = block(streams, geometries, phi)
            features.append(streams)
            level_geometries.append(geometries)
        pooled = torch.stack([s.flatten(1).max(dim=1).values for s in streams])
        embeddings = self.embed(pooled)
        return Encoding(scans=tuple(p.scan for p in prepared), prepared=tuple(prepared),
                        features=features, geometries=level_geometries,
                        embeddings=embeddings, phi=phi)

    def _pool(self, streams, geometries):
        pooled_streams, pooled_geometries = [], []
        for features, geometry in zip(streams, geometries):
            pooled = vx.Volume(features, geometry).pool(
                2, mode='max', spacing_ratio_thresh=self.config.anisotropy_threshold)
            pooled_streams.append(pooled.tensor)
            pooled_geometries.append(pooled.geometry)
        return pooled_streams, pooled_geometries

    # -------------------------------------------------------------- generator
    def generate(self, encoding: Encoding, phi: Any = None) -> list[torch.Tensor]:
        """Run the generator; differentiable.

        Args:
            encoding: From :meth:`encode`.
            phi: Generator φ (see :func:`phi_matrix`).

        Returns:
            Per stream, foreground probabilities ``(1, X, Y, Z)`` on the stream's prepared
            grid (``encoding.prepared[i].volume``).
        """
        if self.config.dense:
            raise ProgramError('a dense network segments a named target: use segment()')
        phi = phi_matrix(phi, len(encoding.scans), self.config.phi_size, self.device)
        return [torch.sigmoid(self.head(f)) for f in self._decode(encoding, phi)]

    def _decode(self, encoding: Encoding, phi: torch.Tensor) -> list[torch.Tensor]:
        """Generator features of the top level, per stream."""
        levels = self.config.levels
        geometries = encoding.geometries
        streams = self.bottleneck(encoding.features[-1], geometries[-1], phi)
        for level in reversed(range(levels - 1)):
            upsampled = []
            for index, features in enumerate(streams):
                moved = upsample(features, geometries[level + 1][index], geometries[level][index])
                upsampled.append(torch.cat([moved, encoding.features[level][index]]))
            streams = self.decoder[level](upsampled, geometries[level], phi)
        return streams

    # ------------------------------------------------------------ dense networks
    def dense_probabilities(self, encoding: Encoding) -> list[torch.Tensor]:
        """Dense networks: per stream ``(1 + labels + lesion classes, X, Y, Z)``: the softmax
        over background and labels, then the lesion sigmoids. The trunk does not depend on
        φ, so this runs once per encoding and is kept on it."""
        if encoding.dense is None:
            zeros = torch.zeros(len(encoding.scans), self.config.phi_size, device=self.device)
            probabilities = [self._dense_softmax(self.head_logits(f, p.volume.tensor))
                             for f, p in zip(self._decode(encoding, zeros), encoding.prepared)]
            if self.config.flip_averaging:
                mirrored = self.encode_prepared([_mirrored(p) for p in encoding.prepared])
                swap = self._mirror_channels()
                for index, features in enumerate(self._decode(mirrored, zeros)):
                    logits = self.head_logits(features, mirrored.prepared[index].volume.tensor)
                    flipped = self._dense_softmax(logits)[swap].flip(1)
                    probabilities[index].add_(flipped).mul_(0.5)
            encoding.dense = probabilities
        return encoding.dense

    def _dense_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Per channel the probability: the (calibrated) anatomical softmax, then the lesion
        sigmoids; written into one new tensor when no gradient is needed."""
        anatomy = self.config.anatomy_channels
        offsets = torch.tensor(self.config.logit_offsets or [0.0], device=logits.device)
        if logits.requires_grad:
            return torch.cat([calibrated_softmax(logits[:anatomy], offsets),
                              torch.sigmoid(logits[anatomy:])])
        out = torch.empty_like(logits)
        calibrated_softmax(logits[:anatomy], offsets, out=out[:anatomy])
        torch.sigmoid(logits[anatomy:], out=out[anatomy:])
        return out

    def _mirror_channels(self) -> list[int]:
        """Channel order that swaps every left label with its right partner."""
        names = list(self.config.label_names)
        position = {name: i + 1 for i, name in enumerate(names)}
        order = list(range(self.config.output_channels))
        for name, index in position.items():
            for a, b in (('Left-', 'Right-'), ('Right-', 'Left-'), ('ctx-lh-', 'ctx-rh-'),
                         ('ctx-rh-', 'ctx-lh-')):
                if name.startswith(a) and b + name[len(a):] in position:
                    order[index] = position[b + name[len(a):]]
        return order

    def head_logits(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Dense networks: all channels' logits from top-level generator features
        ``([B,] C, X, Y, Z)`` and the normalised image ``([B,] 1, X, Y, Z)`` on that grid:
        the pointwise head, its lesion rows replaced by the lesion head's where there is one."""
        return self._with_lesion_head(self.head(features), features, image)

    def _with_lesion_head(self, logits: torch.Tensor, features: torch.Tensor,
                          image: torch.Tensor) -> torch.Tensor:
        """``logits`` of the pointwise head with its lesion rows replaced by the lesion
        head's (unchanged without one)."""
        if self.lesion_head is None:
            return logits
        anatomy = self.config.anatomy_channels
        lesions = self.lesion_head(features, image.to(features.device))
        return torch.cat([logits[..., :anatomy, :, :, :], lesions], dim=-4)

    def dense_logits(self, images: torch.Tensor, trunk_grad: bool = True) -> torch.Tensor:
        """Dense training: head logits ``(B, channels, X, Y, Z)`` of a batch of single-scan
        samples ``(B, 1, X, Y, Z)`` on one isotropic grid whose sides are multiples of
        ``2 ** (levels - 1)``. The same function as :meth:`encode` + :meth:`dense_probabilities`
        (before the softmax) on each sample alone. ``trunk_grad=False`` runs the trunk and the
        pointwise head without autograd (training the lesion head alone)."""
        with torch.set_grad_enabled(trunk_grad and torch.is_grad_enabled()):
            features = self._dense_features(images)
            logits = self.head(features)
        return self._with_lesion_head(logits, features, images)

    def dense_logits_split(self, images: torch.Tensor,
                           trunk_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`dense_logits` as ``(anatomy, lesions)``: the anatomical channels
        ``(B, K, X, Y, Z)`` and the lesion channels ``(B, L, X, Y, Z)``, each computed alone
        and in fp32 whatever autocast the trunk runs under (the training loss's inputs; the
        same values as slicing :meth:`dense_logits`, without a full output whose backward
        would fill and copy every channel)."""
        anatomy = self.config.anatomy_channels
        with torch.set_grad_enabled(trunk_grad and torch.is_grad_enabled()):
            features = self._dense_features(images)
            with torch.autocast(features.device.type, enabled=False):
                top = features.float()
                anatomy_logits = self.head.rows(top, 0, anatomy)
                lesion_logits = None if self.lesion_head is not None \
                    else self.head.rows(top, anatomy)
        if lesion_logits is None:
            lesion_logits = self.lesion_head(features, images.to(features.device)).float()
        return anatomy_logits, lesion_logits

    def _dense_features(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        features = images
        for level, block in enumerate(self.encoder):
            if level > 0:
                features = F.max_pool3d(features, 2, ceil_mode=True)
            features = block.forward_batch(features)
            skips.append(features)
        features = self.bottleneck.forward_batch(features)
        for level in reversed(range(self.config.levels - 1)):
            skip = skips[level]
            upsampled = F.interpolate(features, scale_factor=2.0, mode='trilinear',
                                      align_corners=False)[..., :skip.shape[2], :skip.shape[3],
                                                           :skip.shape[4]]
            features = self.decoder[level].forward_batch(torch.cat([upsampled, skip], dim=1))
        return features

    def refines(self) -> bool:
        """Whether targets come from the intensity-refined labels at the scans' own
        resolution (dense networks with ``intensity_refinement``, not while training)."""
        return self.config.dense and self.config.intensity_refinement and not self.training

    def refined_labels(self, encoding: Encoding) -> list:
        """Per stream the :class:`~vpcli.vision.refinement.RefinedLabels` (made once, on the
        first anatomical target) on the stream's refinement grid, or None for a stream the
        network does not refine (:attr:`PreparedScan.refinable`: a scan no finer than the
        working grid, unless ``refinement_spacing_mm`` gives it a finer grid; docs/vision.md
        "Coarse scans")."""
        from vpcli.vision.refinement import refine_labels
        if encoding.refined is None:
            from vpcli.vision.targets import refinement_held_labels
            anatomy = self.config.anatomy_channels
            fixed = torch.tensor(refinement_held_labels(self.config.label_names))
            encoding.refined = [
                None if not prepared.refinable else
                refine_labels(probabilities[:anatomy], prepared.volume.geometry.to(self.device),
                              prepared.fine_volume.tensor.to(self.device),
                              prepared.fine_volume.geometry.to(self.device), fixed=fixed,
                              edge=self.config.edge_refinement)
                for probabilities, prepared in zip(self.dense_probabilities(encoding),
                                                   encoding.prepared)]
        return encoding.refined

    def select(self, encoding: Encoding, key: str) -> list[torch.Tensor]:
        """Dense networks: per stream the probability ``(1, X, Y, Z)`` of target ``key``, on
        the working grid, or on the scan's own grid for a stream the network refines
        (:meth:`refined_labels`)."""
        from vpcli.vision.targets import parts_of
        config = self.config
        parts = parts_of(key, config.label_names, config.lesion_classes)
        anatomy = config.anatomy_channels
        refining = self.refines()
        out = []
        for index, probabilities in enumerate(self.dense_probabilities(encoding)):
            prepared = encoding.prepared[index]
            fine = refining and prepared.fine_volume is not None
            refine = fine and prepared.refinable
            if refine and parts.labels:
                refined = self.refined_labels(encoding)[index]
                chosen = refined.total(parts.labels)
                if parts.white_matter_sides:
                    nearest = self._nearest_parcels(encoding, index)
                    if nearest is not None:
                        nearest = prepared.upsample(
                            torch.from_numpy(nearest)[None].float().to(self.device),
                            mode='nearest')[0].round().long().cpu().numpy()
                    chosen = chosen + self._lobe_white_matter(
                        refined.total(self._white_channels(parts)), nearest, parts)
            elif parts.labels:
                chosen = probabilities[list(parts.labels)].sum(0, keepdim=True)
                if parts.white_matter_sides:
                    nearest = self._nearest_parcels(encoding, index)
                    white = probabilities[self._white_channels(parts)].sum(0, keepdim=True)
                    chosen = chosen + self._lobe_white_matter(white, nearest, parts)
            else:
                grid = prepared.fine_volume.tensor if refine else probabilities
                chosen = torch.zeros((1, *grid.shape[1:]), dtype=probabilities.dtype,
                                     device=probabilities.device)
            if parts.lesions:
                leaves = probabilities[anatomy:] if config.lesion_decoding == 'channel' else \
                    self._lesion_components(encoding, index)
                lesions = leaves[list(parts.lesions)].amax(0, keepdim=True)
                chosen = torch.maximum(chosen, prepared.upsample(lesions) if refine else lesions)
            if fine and not refine:  # a thick-slice scan: the working grid's target on its own
                chosen = prepared.upsample(chosen, antialias=True)
            out.append(chosen.clamp(0, 1))
        return out

    def _lesion_components(self, encoding: Encoding, stream: int) -> torch.Tensor:
        """``lesion_decoding = "component"``: the leaf lesion channels ``(L, X, Y, Z)`` of a
        stream with each connected lesion given to one class. A lesion is a 26-connected part
        of ``u > 0.5``, ``u`` the maximum over the leaf channels other than oedema; inside it
        the class whose probability sums highest over it takes ``u`` and the others 0.
        Outside every lesion, and the oedema channel everywhere, stay as they are.
        Computed once per encoding and stream."""
        if encoding.lesion_components is None:
            encoding.lesion_components = {}
        if stream not in encoding.lesion_components:
            import numpy as np
            from scipy import ndimage
            anatomy = self.config.anatomy_channels
            leaves = self.dense_probabilities(encoding)[stream][anatomy:].clone()
            solid = [i for i, key in enumerate(self.config.lesion_classes) if key != 'edema']
            if solid:
                union = leaves[solid].amax(0)
                parts, count = ndimage.label((union > 0.5).cpu().numpy(),
                                             structure=np.ones((3, 3, 3), dtype=bool))
                if count:
                    parts_t = torch.from_numpy(parts).to(leaves.device).long()
                    flat = parts_t.flatten()
                    sums = torch.zeros((count + 1, len(solid)), dtype=leaves.dtype,
                                       device=leaves.device)
                    sums.index_add_(0, flat, leaves[solid].flatten(1).T)
                    winner = sums.argmax(1)  # per component, the index into ``solid``
                    inside = parts_t > 0
                    for j, channel in enumerate(solid):
                        owns = inside & (winner[parts_t] == j)
                        leaves[channel] = torch.where(owns, union, torch.where(
                            inside, torch.zeros_like(union), leaves[channel]))
            encoding.lesion_components[stream] = leaves
        return encoding.lesion_components[stream]

    def _nearest_parcels(self, encoding: Encoding, stream: int):
        """Per voxel of a stream, the channel of the nearest predicted cortical parcel (None
        when no voxel is cortex); computed once per encoding, for every lobe and territory."""
        if encoding.nearest_parcels is None:
            encoding.nearest_parcels = {}
        if stream not in encoding.nearest_parcels:
            import numpy as np
            from scipy import ndimage
            probabilities = self.dense_probabilities(encoding)[stream]
            winners = probabilities[:self.config.anatomy_channels].argmax(0).cpu().numpy()
            cortical = np.array([name.startswith('ctx-')
                                 for name in ('',) + tuple(self.config.label_names)])
            inside = cortical[winners]
            nearest = None
            if inside.any():
                _, indices = ndimage.distance_transform_edt(~inside, return_indices=True)
                nearest = winners[tuple(indices)]
            encoding.nearest_parcels[stream] = nearest
        return encoding.nearest_parcels[stream]

    def _white_channels(self, parts) -> list[int]:
        """Channels of the cerebral white matter of a lobe's or territory's sides."""
        names = {name: i + 1 for i, name in enumerate(self.config.label_names)}
        return [names[f'{side}-Cerebral-White-Matter'] for side in parts.white_matter_sides
                if f'{side}-Cerebral-White-Matter' in names]

    @staticmethod
    def _lobe_white_matter(white: torch.Tensor, nearest, parts) -> torch.Tensor:
        """The cerebral white matter probability ``white`` where the nearest predicted
        cortical parcel is one of the target's (as the ground truth of lobes and territories
        is defined)."""
        import numpy as np
        if nearest is None:
            return torch.zeros_like(white)
        in_target = torch.from_numpy(np.isin(nearest, list(parts.labels))).to(white.device)
        return white * in_target

    def head_sizes(self, encoding: Encoding) -> list[dict | None]:
        """Per session the estimated total intracranial volume of the head
        (:func:`vpcli.vision.head_size.estimate` on the arg-max labels of the session's
        first scan), or None where the network has no atlas centroids or the fit fails."""
        if encoding.heads is None:
            from vpcli.vision.head_size import estimate
            heads = []
            for group in encoding.sessions:
                head = None
                if self.config.dense and self.config.atlas_centroids:
                    probabilities = self.dense_probabilities(encoding)[group[0]]
                    labels = probabilities[:self.config.anatomy_channels].argmax(0)
                    geometry = encoding.prepared[group[0]].volume.geometry
                    head = estimate(labels.cpu().numpy(), geometry.tensor.double().cpu().numpy(),
                                    self.config.atlas_centroids)
                heads.append(head)
            encoding.heads = heads
        return encoding.heads

    def segment_probabilities(self, encoding: Encoding, phi: Any = None) -> list[vx.Volume]:
        """Per-scan probabilities on each input scan's own grid (shape and geometry)."""
        probabilities = self.generate(encoding, phi)
        return [prepared.restore(p) for prepared, p in zip(encoding.prepared, probabilities)]

    def session_probabilities(self, encoding: Encoding, phi: Any = None,
                              probabilities: list[torch.Tensor] | None = None,
                              fine: bool = False) -> list[vx.Volume]:
        """Max-merged probabilities per session, on the grid of each session's first scan.

        Differentiable. Sessions in :func:`session_groups` order. ``probabilities`` (per
        stream, on the prepared grids, or with ``fine`` on each scan's own resolution)
        replaces running the generator with ``phi``.
        """
        if probabilities is None:
            probabilities = self.generate(encoding, phi)
        merged = []
        for group in encoding.sessions:
            first = encoding.prepared[group[0]]
            session = first.restore(probabilities[group[0]], fine=fine).tensor
            target = first.scan.volume.geometry.to(self.device)
            for index in group[1:]:
                prepared = encoding.prepared[index]
                grid = prepared.fine_volume if fine and prepared.fine_volume is not None \
                    else prepared.volume
                other = vx.Volume(probabilities[index], grid.geometry.to(self.device))
                session = torch.maximum(session, other.resample_like(target).tensor)
            merged.append(vx.Volume(session, target))
        return merged

    def segment(self, encoding: Encoding, target: str, phi: Any = None,
                choose: Callable | None = None) -> Mask | tuple[Mask, ...]:
        """Segment ``target``.

        The paper's one-channel networks are conditioned by φ alone (the text is for the
        reader). Dense networks return the target the text names, assembled from their
        channels (:meth:`select`; an unknown name is a :class:`ProgramError`); φ is kept in
        the program for the record but does not choose the target (docs/vision.md gives
        the measurement behind that choice).

        ``choose(session, probability) -> (keep, unmatched)``, where given (not while
        training), keeps only part of a session's mask: ``keep`` a boolean array on the
        session's first-scan grid (None keeps all), ``unmatched`` what the kept part does
        not match, recorded in the mask's QC signals (:mod:`vpcli.library.lesion_choice`
        picks the lesions a description names this way).

        Returns:
            A boolean :class:`Mask` per session on the grid of the session's first scan
            (probability > 0.5); one Mask for one session, else a tuple in time order.
            In training mode (with gradients enabled) a :class:`SegmentationRecord` with
            the differentiable probabilities is appended to ``encoding.segmentations``.
        """
        phi_rows = phi_matrix(phi, len(encoding.scans), self.config.phi_size, self.device)
        if self.config.dense:
            key = target_key(str(target))
            probabilities = self.session_probabilities(encoding,
                                                       probabilities=self.select(encoding, key),
                                                       fine=self.refines())
        else:
            probabilities = self.session_probabilities(encoding, phi_rows)
        masks = []
        brains = None
        if self.config.dense and not self.training and str(target).lower().split()[:1] in \
                (['left'], ['right']):
            if encoding.brains is None:
                encoding.brains = self.session_probabilities(
                    encoding, probabilities=self.select(encoding, 'whole brain'),
                    fine=self.refines())
            brains = encoding.brains
        for index, (group, probability) in enumerate(zip(encoding.sessions, probabilities)):
            first = encoding.scans[group[0]]
            unmatched = None
            if choose is not None and not self.training:
                keep, unmatched = choose(index, probability)
                if keep is not None:
                    probability = probability.new(probability.tensor * torch.as_tensor(
                        keep, device=probability.tensor.device)[None])
            binary = (probability.tensor.detach() > 0.5).cpu()
            sources = union_sources(*(encoding.scans[i].sources for i in group))
            quality = None
            if self.config.dense and not self.training:
                quality = mask_signals(probability.tensor[0].detach().float(),
                                       None if brains is None else brains[index].tensor[0].float(),
                                       str(target),
                                       probability.geometry.tensor.double().cpu().numpy())
                if unmatched:
                    quality['unmatched_descriptors'] = list(unmatched)
                head = self.head_sizes(encoding)[index]
                if head is not None:
                    quality['etiv_ml'] = head['etiv_ml']
            masks.append(Mask(volume=first.volume.new(binary, keep_labels=False),
                              sources=sources, description=str(target), quality=quality))
        masks = tuple(masks)
        if self.training and torch.is_grad_enabled():
            encoding.segmentations.append(SegmentationRecord(target=str(target), phi=phi_rows,
                                                             probabilities=probabilities,
                                                             masks=masks))
        return masks[0] if len(masks) == 1 else masks

    # ------------------------------------------------------------- checkpoints
    def save(self, path: os.PathLike | str) -> Path:
        """Write a self-describing checkpoint ``{'config': dict, 'state': state_dict}``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu() for name, tensor in self.state_dict().items()}
        temporary = path.with_name(f'.{path.name}.tmp')
        torch.save({'config': self.config.to_dict(), 'state': state}, temporary)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: os.PathLike | str, device: torch.device | str = 'cpu') -> 'VisionNetwork':
        """Rebuild a network from :meth:`save`'s file, loading weights strictly.

        Raises:
            BadInputError: the file is missing, not a checkpoint, or its weights do not
                match its config.
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f'{path}: no such vision checkpoint')
        try:
            data = torch.load(path, map_location='cpu', weights_only=True)
            network = cls(VisionConfig.from_dict(data['config']))
            network.load_state_dict(data['state'], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError, EOFError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise BadInputError(f'{path}: not a usable vision checkpoint ({reason})') from None
        return network.to(device).eval()
