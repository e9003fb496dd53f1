"""Training world: anatomy sources, synthetic scans and synthetic lesions.

Public interface (stable; see ``docs/synthesis.md``):

* :func:`vpcli.synth.cases.sample_case` -> :class:`vpcli.synth.cases.SynthCase`
  (scans, per-scan ground-truth label and lesion maps, lesion metadata).
* :func:`vpcli.synth.vocabulary.load_vocabulary` -> the label vocabulary
  (FreeSurfer ids and names, sides, tissue classes, groups: lobes, territories, ...).
* :mod:`vpcli.synth.sources` - which label maps are used and which is held out.
* :mod:`vpcli.synth.lesions` - lesion classes (``data/lesion_classes.json``), shapes,
  placement, signal, and the signal-ratio measurement the descriptors are checked with
  (also the import point of :mod:`vpcli.synth.lesion_location`: side, lobe and territory
  of a lesion mask).

Importing this package is cheap; torch and voxel are imported inside functions.
"""
