"""The vision network m (DESIGN.md §2): native resolution, φ-conditioned, any number of scans.

- :mod:`vpcli.vision.config`: :class:`VisionConfig` and the named ``small``/``paper`` configs.
- :mod:`vpcli.vision.preprocess`: RAS conforming, head crop, robust [0, 1] intensities, and
  their exact inverse for outputs.
- :mod:`vpcli.vision.layers`: native convolution, φ mixing, cross-stream attention.
- :mod:`vpcli.vision.model`: :class:`VisionNetwork` (encode, generate, segment, save/load)
  and :class:`Encoding`.
- :mod:`vpcli.vision.bench`: the native vs 1 mm isotropic efficiency benchmark.

Import the submodules directly; this package imports nothing heavy on its own.
"""
