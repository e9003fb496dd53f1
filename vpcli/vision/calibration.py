"""Volume calibration of a dense network: one logit offset per anatomical channel.

A network trained with soft Dice terms makes small, uncertain structures too large: on
held-out synthetic samples the shipped network's pallidum masks were about 1.5 times the
true volume (docs/vision.md, ``benchmarks/volume_bias.py``). Adding a constant to a
label's logit grows or shrinks that structure everywhere at once; :func:`calibrated_softmax`
does so among the labels only, so the background keeps its probability and the brain's
outer edge (the whole-brain mask) does not move.
:func:`fit_offsets` finds the offsets that make thresholded volumes (probability > 0.5, as
``segment`` thresholds) match true volumes over a set of held-out synthetic samples, and
:func:`calibrate` fits them for a network and scores them on other samples; the export
stores them in the network's config (``VisionConfig.logit_offsets``), applied at run time
only: training and the committed training state never see them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from vpcli.vision.model import calibrated_softmax
from vpcli.vision.targets import calibrated_labels

#: labels with fewer true voxels than this over the fitting samples keep offset 0
MIN_VOXELS = 50


def label_counts(logits: Sequence[torch.Tensor], truths: Sequence[torch.Tensor],
                 offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per anatomical channel, summed over samples: true voxels, mask voxels (probability
    > 0.5), summed probability, and voxels both in the mask and true.

    Args:
        logits: Per sample ``(K, X, Y, Z)`` anatomical logits (background first).
        truths: Per sample ``(X, Y, Z)`` true class indices; an index ``>= K`` is a
            partially labelled voxel (:mod:`vpcli.synth.colin` groups, such as the GCA's
            midline white matter, which may be corpus callosum): it counts nowhere.
        offsets: ``(K,)`` calibration offsets (:func:`calibrated_softmax`).
    """
    channels = offsets.numel()
    true = torch.zeros(channels, dtype=torch.float64)
    mask, soft, overlap = torch.zeros_like(true), torch.zeros_like(true), torch.zeros_like(true)
    for logit, truth in zip(logits, truths):
        probabilities = calibrated_softmax(logit.float(), offsets).flatten(1)
        labels = truth.flatten()
        known = labels < channels
        if not bool(known.all()):
            probabilities, labels = probabilities[:, known], labels[known]
        inside = probabilities > 0.5
        true += torch.bincount(labels, minlength=channels)[:channels].double()
        mask += inside.sum(1).double()
        soft += probabilities.sum(1).double()
        hits = inside.gather(0, labels.view(1, -1))[0]
        overlap += torch.bincount(labels[hits], minlength=channels)[:channels].double()
    return true, mask, soft, overlap


def calibrated_channels(label_names: Sequence[str]) -> torch.Tensor:
    """Per anatomical channel (background first), whether the calibration fits it:
    every label but the cortical parcels and the tissue classes
    (:func:`vpcli.vision.targets.calibrated_labels`)."""
    return torch.tensor(calibrated_labels(label_names))


def fit_offsets(logits: Sequence[torch.Tensor], truths: Sequence[torch.Tensor],
                mirror: Sequence[int] | None = None, iterations: int = 30, rate: float = 0.7,
                limit: float = 3.0, channels: torch.Tensor | None = None) -> torch.Tensor:
    """Offsets ``(K,)`` that make each label's thresholded volume (under
    :func:`calibrated_softmax`) match its true volume over the samples: damped fixed-point
    steps on the log volume ratios. The background, and labels with fewer than
    :data:`MIN_VOXELS` true voxels, and channels not in ``channels`` (a boolean mask; None:
    all), keep offset 0; the others stay within ``±limit``. With ``mirror`` (the channel order that swaps left and right) a structure's two sides share
    one offset (the network is flip-averaged at run time, and one side alone is a noisier
    estimate)."""
    count = logits[0].shape[0]
    offsets = torch.zeros(count)
    swap = None if mirror is None else torch.as_tensor(list(mirror)[:count])
    true, background_mask, candidates = _fitting_voxels(logits, truths, count)
    if swap is not None:
        true = true + true[swap]
    for _ in range(iterations):
        mask = torch.zeros_like(true)
        mask[0] = background_mask
        for logit in candidates:
            mask[1:] += (calibrated_softmax(logit, offsets)[1:] > 0.5).sum(1).double()
        if swap is not None:
            mask = mask + mask[swap]
        fitted = true >= MIN_VOXELS
        fitted[0] = False
        if channels is not None:
            fitted &= channels
        step = -rate * torch.log((mask + 1) / (true + 1)).float()
        offsets = torch.where(fitted, (offsets + step).clamp(-limit, limit), offsets)
    return offsets


def _fitting_voxels(logits: Sequence[torch.Tensor], truths: Sequence[torch.Tensor],
                    channels: int) -> tuple[torch.Tensor, float, list[torch.Tensor]]:
    """What :func:`fit_offsets` needs of the samples, once: the true voxels per channel (as
    :func:`label_counts` counts them), the voxels where the background is above 0.5 (it
    keeps its probability under any offsets), and per sample the ``(K, N)`` logits of
    the other voxels, the only ones whose label can pass 0.5 (a label's probability is at
    most ``1 - p0``)."""
    true = torch.zeros(channels, dtype=torch.float64)
    background, candidates = 0.0, []
    for logit, truth in zip(logits, truths):
        logit = logit.float().flatten(1)
        labels = truth.flatten()
        known = labels < channels
        if not bool(known.all()):
            logit, labels = logit[:, known], labels[known]
        true += torch.bincount(labels, minlength=channels)[:channels].double()
        p0 = calibrated_softmax(logit, torch.zeros(channels))[0]
        background += float((p0 > 0.5).sum())
        candidates.append(logit[:, p0 <= 0.5].contiguous())
    return true, background, candidates


def volume_summary(logits: Sequence[torch.Tensor], truths: Sequence[torch.Tensor],
                   offsets: torch.Tensor) -> dict:
    """Median thresholded / true volume ratio, median ``|log ratio|`` and mean Dice over
    the labels with at least :data:`MIN_VOXELS` true voxels (background excluded)."""
    true, mask, _, overlap = label_counts(logits, truths, offsets)
    scored = true[1:] >= MIN_VOXELS
    ratio = (mask[1:] / true[1:].clamp(min=1))[scored]
    dice = (2 * overlap[1:] / (mask[1:] + true[1:]).clamp(min=1))[scored]
    return {'labels': int(scored.sum()), 'median_volume_ratio': round(float(ratio.median()), 4),
            'median_abs_log_ratio': round(float(ratio.clamp(min=1e-6).log().abs().median()), 4),
            'mean_dice': round(float(dice.mean()), 4)}


def synthetic_logits(network, samples: int, seed: int, shape: int = 64, gca_draws: int = 3,
                     sources: Sequence[str] = ('fsaverage', 'gca'), spacing_mm: float = 2.0,
                     template_probability: float | None = None):
    """Anatomical logits (fp16) and true labels of ``samples`` new synthetic samples, drawn
    as the dense stage draws them (``seed`` a synthesis seed training did not use: new
    GCA label maps, deformations, contrasts and crops; no lesions), one at a time.
    ``template_probability`` replaces the share of samples with real T1 intensities (the
    sources' T1 templates) instead of random contrasts (None: as in training)."""
    from vpcli.synth.dense import DenseSynthesizer, SynthesisSettings

    config = network.config
    extra = {} if template_probability is None else {'template_probability': template_probability}
    settings = SynthesisSettings(spacing_mm=spacing_mm, shape=(shape,) * 3,
                                 lesion_probability=0.0, gca_draws=gca_draws, **extra)
    synthesizer = DenseSynthesizer(config.label_ids, config.lesion_classes, network.device,
                                   settings, tuple(sources), seed=seed)
    logits, truths = [], []
    with torch.no_grad():
        for _ in range(samples):
            batch = synthesizer.sample(1)
            logits.append(network.dense_logits(batch.image)[0, :config.anatomy_channels].half().cpu())
            truths.append(batch.labels[0].cpu())
    return logits, truths


def calibrate(network, samples: int, seed: int = 7, shape: int = 64,
              sources: Sequence[str] = ('fsaverage', 'gca'), gca_draws: int = 3,
              spacing_mm: float = 2.0) -> tuple[list[float], dict]:
    """Fit the volume calibration of a dense network on ``samples`` new synthetic samples
    (synthesis seed ``seed``; the training ``sources``, ``gca_draws`` new GCA label maps)
    and score it on ``samples // 2`` others (seed ``seed + 1``).

    Returns:
        The offsets (one per anatomical channel) and a record: what they were fitted on and
        the held-out summary (:func:`volume_summary`) without and with them.
    """
    was_training = network.training
    network.eval()
    logits, truths = synthetic_logits(network, samples, seed, shape, gca_draws, sources, spacing_mm)
    offsets = fit_offsets(logits, truths, network._mirror_channels(),
                          channels=calibrated_channels(network.config.label_names))
    held_logits, held_truths = synthetic_logits(network, max(samples // 2, 1), seed + 1, shape,
                                                gca_draws, sources, spacing_mm)
    network.train(was_training)
    drawn = ' and '.join(f'{gca_draws} GCA draws' if name == 'gca' else name for name in sources)
    record = {'fitted_on': f'{samples} synthetic samples of {shape}^3 at {spacing_mm:g} mm ({drawn}, '
                           f'synthesis seed {seed}; no lesions)',
              'held_out': f'{len(held_logits)} samples, synthesis seed {seed + 1}',
              'without': volume_summary(held_logits, held_truths, torch.zeros_like(offsets)),
              'with': volume_summary(held_logits, held_truths, offsets)}
    return [round(float(v), 4) for v in offsets], record
