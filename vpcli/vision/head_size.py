"""Head size from a dense network's labels: the estimated total intracranial volume (eTIV).

FreeSurfer estimates a head's intracranial volume from the affine registration of the scan
to the MNI305 atlas (Buckner et al. 2004, *NeuroImage* 23:724-738):
``eTIV = 1948.106 mL / det(A)``, where ``A`` maps the subject to MNI305 (``mri_segstats
--etiv``; a head larger than the atlas needs shrinking, ``det < 1``). Its value does not
depend on how much brain is left in the skull, which is why studies divide volumes by it.

A dense network already labels every structure, so the affine comes from them: the
centroid of each label the network finds (its arg-max region, in scanner mm) is paired
with the centroid of the same label in ``fsaverage``'s ``aparc+aseg``, which lies in
MNI305 space, and ``A`` is the weighted least-squares affine between the two point sets,
refitted without labels whose residual is far above the others' (a mislabelled or
cut-off structure). The atlas centroids are computed when a network is exported and kept
in its config (:attr:`~vpcli.vision.config.VisionConfig.atlas_centroids`), so that a run
needs no FreeSurfer files.

How close it comes (docs/qc.md "Head size"): a scan enlarged or shrunk by a known factor
moves the estimate by that factor to within a few per cent.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: FreeSurfer's eTIV scale factor for ``talairach.xfm`` (mL): eTIV = this / det(A)
ETIV_SCALE_ML = 1948.106

#: fewest labels the fit must keep; fewer gives no estimate
MIN_LABELS = 20

#: a label is used when its region holds at least this share of its atlas volume
MIN_VOLUME_SHARE = 0.1

#: residuals above this many times the median residual (and above MIN_OUTLIER_MM) are
#: dropped before the fit is repeated
OUTLIER_FACTOR = 3.0
MIN_OUTLIER_MM = 3.0

#: a fit whose kept labels' RMS residual exceeds this (mm) gives no estimate
MAX_RMS_MM = 8.0


def label_centroids(labels: np.ndarray, affine: np.ndarray, count: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (scanner mm) and volume (mL) of every label index ``1..count`` of an
    integer label array on a grid with voxel-to-world matrix ``affine``.

    Returns:
        ``(centroids (count + 1, 3), volumes (count + 1,))``; index 0 and absent labels have
        volume 0 and centroid 0.
    """
    labels = np.asarray(labels)
    flat = labels.ravel().astype(np.int64)
    keep = (flat > 0) & (flat <= count)
    flat = flat[keep]
    voxels = np.bincount(flat, minlength=count + 1).astype(np.float64)
    coordinates = np.indices(labels.shape, dtype=np.float64).reshape(3, -1)[:, keep]
    sums = np.stack([np.bincount(flat, weights=axis, minlength=count + 1)
                     for axis in coordinates], axis=1)
    voxel_centres = sums / np.maximum(voxels, 1)[:, None]
    affine = np.asarray(affine, dtype=np.float64)
    centroids = voxel_centres @ affine[:3, :3].T + affine[:3, 3]
    centroids[voxels == 0] = 0
    volumes = voxels * abs(np.linalg.det(affine[:3, :3])) / 1000
    return centroids, volumes


def atlas_table(label_map: np.ndarray, affine: np.ndarray, label_ids: Sequence[int]
                ) -> tuple[tuple[float, float, float, float], ...]:
    """Per network label (``label_ids`` order) ``(x, y, z, mL)`` in an atlas label map of
    FreeSurfer label ids (``fsaverage``'s ``aparc+aseg``, MNI305 mm); mL 0 where absent."""
    index = np.zeros(int(np.max(label_map)) + 1, dtype=np.int64)
    for channel, label in enumerate(label_ids, start=1):
        if label < index.size:
            index[label] = channel
    channels = index[np.asarray(label_map, dtype=np.int64)]
    centroids, volumes = label_centroids(channels, affine, len(label_ids))
    return tuple((round(float(x), 3), round(float(y), 3), round(float(z), 3),
                  round(float(v), 4)) for (x, y, z), v in zip(centroids[1:], volumes[1:]))


def fit_affine(source: np.ndarray, target: np.ndarray, weights: np.ndarray,
               rounds: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares affine ``target ~ A @ source + t``, refitted without outliers.

    Returns:
        ``(matrix (4, 4), residuals (n,) mm, kept (n,) bool)``.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    design = np.c_[source, np.ones(len(source))]
    root = np.sqrt(np.asarray(weights, dtype=np.float64))[:, None]
    kept = np.ones(len(source), dtype=bool)
    for _ in range(rounds):
        solution, *_ = np.linalg.lstsq(design[kept] * root[kept], target[kept] * root[kept],
                                       rcond=None)
        residuals = np.linalg.norm(design @ solution - target, axis=1)
        limit = max(OUTLIER_FACTOR * float(np.median(residuals[kept])), MIN_OUTLIER_MM)
        new = residuals <= limit
        if new.sum() < 4 or np.array_equal(new, kept):
            break
        kept = new
    matrix = np.eye(4)
    matrix[:3] = solution.T
    return matrix, residuals, kept


def estimate(labels: np.ndarray, affine: np.ndarray,
             atlas: Sequence[Sequence[float]]) -> dict[str, Any] | None:
    """The eTIV of a head from its label array (network channel indices, 0 background).

    Args:
        labels: Integer array of anatomical channel indices (the network's arg-max).
        affine: Voxel-to-world matrix (scanner RAS mm) of ``labels``' grid.
        atlas: Per channel ``(x, y, z, mL)`` in MNI305 (:func:`atlas_table`).

    Returns:
        ``{'etiv_ml', 'determinant', 'labels', 'rms_mm'}``, or None when too few labels are
        found or they do not fit one affine (a partial or unusual scan).
    """
    atlas = np.asarray(atlas, dtype=np.float64)
    if atlas.ndim != 2 or len(atlas) == 0:
        return None
    centroids, volumes = label_centroids(labels, affine, len(atlas))
    centroids, volumes = centroids[1:], volumes[1:]
    use = (atlas[:, 3] > 0) & (volumes >= MIN_VOLUME_SHARE * atlas[:, 3])
    if use.sum() < MIN_LABELS:
        return None
    weights = np.sqrt(np.minimum(volumes[use], atlas[use, 3]))
    matrix, residuals, kept = fit_affine(centroids[use], atlas[use, :3], weights)
    determinant = float(np.linalg.det(matrix[:3, :3]))
    rms = float(np.sqrt(np.mean(residuals[kept] ** 2)))
    if kept.sum() < MIN_LABELS or determinant <= 0 or rms > MAX_RMS_MM:
        return None
    return {'etiv_ml': round(ETIV_SCALE_ML / determinant, 2),
            'determinant': round(determinant, 5), 'labels': int(kept.sum()),
            'rms_mm': round(rms, 2)}


def fsaverage_atlas(label_ids: Sequence[int]) -> tuple[tuple[float, float, float, float], ...]:
    """:func:`atlas_table` of ``fsaverage``'s ``aparc+aseg`` (installed from its package;
    :class:`~vpcli.errors.BadInputError` when it is not)."""
    from vpcli.synth.sources import fsaverage_file
    from vpcli.volumes import load_volume

    volume = load_volume(fsaverage_file('aparc+aseg.mgz'), label_map=True)
    return atlas_table(volume.tensor[0].cpu().numpy(),
                       volume.geometry.tensor.double().cpu().numpy(), label_ids)
