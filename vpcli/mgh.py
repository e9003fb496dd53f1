"""FreeSurfer MGH/MGZ reading and writing for ``voxel``, through nibabel.

``voxel`` 0.4.0 reads ``.mgz`` through ``surfa``, whose reader fails under NumPy 2
(``fromstring`` was removed). nibabel's ``MGHImage`` is well kept and already a
dependency, so we register this protocol in place of voxel's for the MGH extensions.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import voxel as vx
from voxel.io.utility import IOProtocol


class NibabelMghIO(IOProtocol):
    """Volume IO protocol for ``.mgz``/``.mgh`` files backed by nibabel."""
    name = 'mgh'
    extensions = ('.mgz', '.mgh')

    def load(self, filename: os.PathLike) -> vx.Volume:
        import nibabel as nib
        image = nib.load(filename)
        array = np.asanyarray(image.dataobj)
        if array.dtype in (np.uint16, np.uint32):
            array = array.astype(np.int32)
        array = array.astype(array.dtype.newbyteorder("="), copy=False)  # MGH is big-endian
        features = torch.from_numpy(np.ascontiguousarray(array))
        if features.ndim == 4:
            features = features.moveaxis(-1, 0)
        return vx.Volume(features, torch.from_numpy(image.affine.astype(np.float64)))

    def load_geometry(self, filename: os.PathLike) -> vx.AcquisitionGeometry:
        import nibabel as nib
        image = nib.load(filename)
        return vx.AcquisitionGeometry(image.shape[:3], torch.from_numpy(image.affine))

    def save(self, volume: vx.Volume, filename: os.PathLike) -> None:
        import nibabel as nib
        array = volume.tensor.movedim(0, -1).detach().cpu().numpy()
        if array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        elif array.dtype == np.int64:
            array = array.astype(np.int32)
        elif array.dtype == np.float64:
            array = array.astype(np.float32)
        affine = volume.geometry.tensor.detach().cpu().numpy().astype(np.float64)
        nib.save(nib.MGHImage(array, affine), str(filename))


def register() -> None:
    """Use :class:`NibabelMghIO` for MGH files in ``voxel.load_volume``/``save_volume``."""
    protocols = vx.io.volume.volume_io_protocols
    protocols[:] = [p for p in protocols if p.name != 'mgh' or p is NibabelMghIO]
    if NibabelMghIO not in protocols:
        protocols.append(NibabelMghIO)


register()
