"""Configuration of the vision network: everything that decides its shape.

A :class:`VisionConfig` is stored inside every checkpoint (``{'config', 'state'}``), so
a saved network rebuilds itself without knowing which recipe made it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Shape of the native-resolution, φ-conditioned vision network (paper App. A.3).

    Attributes:
        widths: Feature channels per level, top (full resolution) first; the number of
            entries is the number of levels. Each must be a multiple of ``group_size``.
        phi_size: Length of the latent instruction vector φ per volume stream.
        attention_size: Hidden size of the cross-stream attention (paper: 32).
        group_size: Channels per GroupNorm group (paper: 4).
        embedding_width: Length of the encoding ε per scan (the language-model width
            it is projected to).
        interaction_from_level: First level (0 = top) with cross-stream attention;
            the paper interacts at every level except the highest resolution.
        anisotropy_threshold: Slice/in-plane spacing ratio above which a level uses
            2D (3x3x1) kernels and does not pool the slice axis.
        head_threshold: Fraction of the robust intensity range above the low
            percentile that counts as head when cropping inputs.
        head_margin_mm: Margin kept around the head bounding box, in mm (paper: 20).
        intensity_percentiles: Robust low and high percentiles mapped to 0 and 1.
        min_spacing_mm: Working-resolution floor: axes finer than this are resampled
            (trilinear, antialiased) to it before the network, and outputs resampled back
            to the input grid. 0 keeps every scan at its own resolution. Weights trained
            only on coarse synthetic grids (the CPU recipe: 2 mm) set it to that spacing,
            so a 1 mm scan is seen at the scale the network learnt (and costs 8x less).
        seed: Seed of the weight initialisation.
        label_ids: Dense networks: FreeSurfer ids of the finest anatomical partition, one
            softmax channel each after the background channel (empty: a one-channel
            network whose output φ alone decides, as in the paper).
        label_names: Their colour-table names (how targets are made of them, with no
            colour table at run time; :mod:`vpcli.vision.targets`).
        lesion_classes: Dense networks: leaf lesion class keys, one sigmoid channel each.
        phi_mixing: Whether every level mixes φ into its features (the paper's design).
            Dense networks leave it off: one pass gives every target, and the target the
            program names is assembled from its channels (docs/vision.md).
        flip_averaging: Dense networks: average the probabilities with those of the
            left-right mirrored scan (channels swapped back) at run time.
        intensity_refinement: Dense networks: at run time, redraw the edges between labels
            at the scan's own resolution with an intensity model fitted to the scan
            (:mod:`vpcli.vision.refinement`); training never refines.
        edge_refinement: With ``intensity_refinement``: the background competes too along
            the brain's edge (its own intensity mixture), so the brain's outer edge follows
            the scan rather than the working grid's blur.
        isotropic_working_grid: Dense networks (with ``min_spacing_mm``): at run time
            every scan is resampled onto a working grid of exactly ``min_spacing_mm`` on
            every axis, the grid the dense stage trains on (a thick-slice axis is
            interpolated finer, not kept), and the masks are resampled back onto its own
            grid; False: only axes finer than it are coarsened (docs/vision.md "Thick
            slices").
        refinement_spacing_mm: With ``intensity_refinement``: 0, a scan no finer than the
            working grid on any axis is not refined; otherwise such a scan is refined on a
            grid of this spacing (its own, finer along the axes coarser than this) from its
            linearly interpolated intensities, and the posterior is averaged back onto its
            own grid (docs/vision.md "Coarse scans").
        lesion_decoding: Dense networks: ``channel``, a lesion class's probability is the
            maximum of its leaf channels; ``component``, each connected lesion (the
            maximum over the leaf channels other than oedema above 0.5) belongs to the one
            leaf class whose probability sums highest over it, so a lesion whose
            probability the channels share is found whole, as one class (oedema keeps its
            channel); docs/vision.md "Lesion decoding".
        logit_offsets: Dense networks: empty, or one number per anatomical channel
            (background first; its own is ignored): the volume calibration fitted at
            export, applied among the labels at run time
            (:func:`vpcli.vision.model.calibrated_softmax`). Training never applies
            them.
        lesion_head_width: Dense networks: 0, the lesion channels are rows of the pointwise
            head; otherwise the width of their own convolutional head
            (:class:`~vpcli.vision.layers.LesionHead`) over the top features and the image.
        atlas_centroids: Dense networks: empty, or per label ``(x, y, z, mL)``, its centroid
            (MNI305 mm) and volume in ``fsaverage``, set at export; a run fits the scan's
            labels to them for the head size (:mod:`vpcli.vision.head_size`).
    """
    widths: tuple[int, ...] = (8, 16, 16, 16, 16, 16)
    phi_size: int = 32
    attention_size: int = 32
    group_size: int = 4
    embedding_width: int = 256
    interaction_from_level: int = 1
    anisotropy_threshold: float = 2.0
    head_threshold: float = 0.1
    head_margin_mm: float = 20.0
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)
    min_spacing_mm: float = 0.0
    seed: int = 0
    label_ids: tuple[int, ...] = ()
    label_names: tuple[str, ...] = ()
    lesion_classes: tuple[str, ...] = ()
    phi_mixing: bool = True
    flip_averaging: bool = False
    intensity_refinement: bool = False
    edge_refinement: bool = False
    isotropic_working_grid: bool = False
    refinement_spacing_mm: float = 0.0
    lesion_decoding: str = 'channel'
    logit_offsets: tuple[float, ...] = ()
    lesion_head_width: int = 0
    atlas_centroids: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        object.__setattr__(self, 'widths', widths)
        for name in ('label_ids', 'label_names', 'lesion_classes'):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.label_ids) != len(self.label_names):
            raise ValueError('label_ids and label_names must have the same length')
        object.__setattr__(self, 'logit_offsets', tuple(float(v) for v in self.logit_offsets))
        if self.logit_offsets and len(self.logit_offsets) != 1 + len(self.label_ids):
            raise ValueError(f'{len(self.logit_offsets)} logit offsets for '
                             f'{1 + len(self.label_ids)} anatomical channels')
        object.__setattr__(self, 'atlas_centroids', tuple(
            tuple(float(v) for v in row) for row in self.atlas_centroids))
        if self.atlas_centroids and (len(self.atlas_centroids) != len(self.label_ids) or any(
                len(row) != 4 for row in self.atlas_centroids)):
            raise ValueError(f'atlas_centroids needs one (x, y, z, mL) row per label '
                             f'({len(self.label_ids)})')
        object.__setattr__(self, 'refinement_spacing_mm', float(self.refinement_spacing_mm))
        if self.lesion_decoding not in ('channel', 'component'):
            raise ValueError(f'lesion_decoding {self.lesion_decoding!r}: expected "channel" or '
                             f'"component"')
        if self.refinement_spacing_mm < 0:
            raise ValueError(f'refinement_spacing_mm {self.refinement_spacing_mm} is negative')
        object.__setattr__(self, 'intensity_percentiles',
                           tuple(float(p) for p in self.intensity_percentiles))
        if not widths:
            raise ValueError('vision config needs at least one level')
        for width in widths:
            if width <= 0 or width % self.group_size:
                raise ValueError(f'level width {width} is not a positive multiple of the '
                                 f'group size {self.group_size}')
        low, high = self.intensity_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f'intensity percentiles {self.intensity_percentiles} must satisfy '
                             f'0 <= low < high <= 100')

    @property
    def dense(self) -> bool:
        """True for a network with one output channel per label and lesion class."""
        return bool(self.label_ids)

    @property
    def anatomy_channels(self) -> int:
        """Dense networks: channels of the anatomical softmax (background + labels)."""
        return 1 + len(self.label_ids)

    @property
    def output_channels(self) -> int:
        """Channels of the head: 1, or background + labels + lesion classes."""
        return self.anatomy_channels + len(self.lesion_classes) if self.dense else 1

    @property
    def levels(self) -> int:
        """Number of resolution levels."""
        return len(self.widths)

    def to_dict(self) -> dict:
        """Plain types only, so checkpoints load with ``torch.load(weights_only=True)``."""
        data = dataclasses.asdict(self)
        data['widths'] = list(self.widths)
        data['intensity_percentiles'] = list(self.intensity_percentiles)
        for name in ('label_ids', 'label_names', 'lesion_classes', 'logit_offsets'):
            data[name] = list(getattr(self, name))
        data['atlas_centroids'] = [list(row) for row in self.atlas_centroids]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> 'VisionConfig':
        """Rebuild a config saved with :meth:`to_dict` (unknown keys are an error)."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f'unknown vision config keys: {", ".join(sorted(unknown))}')
        return cls(**data)


#: config keys that change what a trained dense network does at run time only (training
#: never uses them): an export takes them from the recipe's named config
RUN_TIME_KEYS = ('flip_averaging', 'intensity_refinement', 'edge_refinement',
                 'refinement_spacing_mm', 'isotropic_working_grid', 'lesion_decoding')


#: named configurations: ``tiny`` for tests, ``small`` for 2 CPU cores, ``paper`` as in App. A.3 (6 levels,
#: 32 channels at the top and 96 below)
CONFIGS = {
    'tiny': VisionConfig(widths=(4, 8, 8, 8), embedding_width=32),
    'small': VisionConfig(widths=(8, 16, 16, 16, 16, 16), embedding_width=256),
    'paper': VisionConfig(widths=(32, 96, 96, 96, 96, 96), embedding_width=512),
    # dense networks (docs/vision.md): the label tables are filled in by the dense stage
    'dense-tiny': VisionConfig(widths=(4, 8, 8), embedding_width=32, phi_mixing=False,
                               min_spacing_mm=2.0),
    'dense-cpu': VisionConfig(widths=(16, 32, 48, 64, 64), embedding_width=256,
                              phi_mixing=False, min_spacing_mm=2.0, flip_averaging=True,
                              intensity_refinement=True, edge_refinement=True,
                              refinement_spacing_mm=0.0, isotropic_working_grid=True),
    'dense-gpu': VisionConfig(widths=(32, 64, 96, 128, 160), embedding_width=512,
                              phi_mixing=False, min_spacing_mm=1.0, flip_averaging=True,
                              intensity_refinement=True, edge_refinement=True,
                              refinement_spacing_mm=0.0, isotropic_working_grid=True),
}


def named_config(name: str) -> VisionConfig:
    """One of :data:`CONFIGS` by name (``tiny``, ``small`` or ``paper``)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f'unknown vision config {name!r}; expected one of '
                         f'{", ".join(sorted(CONFIGS))}') from None
