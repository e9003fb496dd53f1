"""Vision: run the language-conditioned vision network on the input scans.

``encode`` runs the network's encoder once over a set of scans; ``segment`` returns the
mask of one target. The language model emits a latent instruction φ at ``<MOD>`` markers
(after each scan argument of ``encode``, after the target argument of ``segment``). A
one-channel network (the paper's design) is conditioned by φ alone and the target text only
names the output; a dense network (the shipped one, docs/vision.md) predicts every target
at once and returns the one the text names.
"""

from __future__ import annotations

from typing import Any

from vpcli.errors import ProgramError
from vpcli.library.context import RunContext, SavedVolume
from vpcli.library.registry import agent_function
from vpcli.volumes import Scan


def _network(context: RunContext, function: str):
    if context.vision is None:
        raise ProgramError(f'{function}: no vision network is loaded for this run '
                           f'(give the run weights with a vision checkpoint)')
    return context.vision


@agent_function('vision', returns='encoding (read() gives one embedding per scan)')
def encode(context: RunContext, *scans: Scan, phi: Any = None):
    """Encode one or more scans with the vision network, all at their native resolution.

    Args:
        *scans: The scans to encode together (any shapes, spacings and orientations;
            scans of one session are combined, several sessions may be encoded at once).
        phi: Latent instruction for the encoder: None, one vector, or one vector per
            scan (written by the model as ``PHI[i]``).

    Returns:
        An encoding to pass to ``segment`` or ``read``; ``read`` hands back one
        embedding per scan.
    """
    import torch

    network = _network(context, 'encode')
    if not scans:
        raise ProgramError('encode: give at least one scan, e.g. encode(img0)')
    for position, scan in enumerate(scans, start=1):
        if not isinstance(scan, Scan):
            raise ProgramError(f'encode: argument {position} is a {type(scan).__name__}, '
                               f'not a scan')
    with torch.set_grad_enabled(network.training and torch.is_grad_enabled()):
        return network.encode(list(scans), phi=phi)


@agent_function('vision', returns='mask on the first scan of the session (a tuple of masks, '
                                  'one per session, oldest first, for several sessions)')
def segment(context: RunContext, enc, target: str, phi: Any = None):
    """Segment a target in encoded scans.

    Outputs of scans from the same session are merged (voxel-wise maximum of the
    probabilities) into one mask per session, on the grid (shape and voxel-to-world
    matrix) of the session's first scan; a voxel is in the mask when its probability
    exceeds 0.5.

    Args:
        enc: An encoding from ``encode``.
        target: What is segmented, in words (``"left hippocampus"``; ``voxelprompt info
            --json`` lists the names); names the mask, and chooses the target of a dense
            network. A lesion description's descriptors (``largest left parietal
            hyperintense infarct``) choose among the lesions of its class the network
            finds: those whose side, lobe, territory, signal, enhancement and diffusion,
            measured on the session's scans, match (else those that match the most, noted
            in the mask's QC block), the largest or smallest of them for a size.
        phi: Latent instruction for the generator: None, one vector, or one vector per
            encoded scan (written by the model as ``PHI[i]``); conditions a one-channel
            network, recorded but unused by a dense one.

    Returns:
        The session's mask, or a tuple of masks (one per session, oldest first) when
        the encoding spans several sessions.
    """
    import torch

    from vpcli.vision.model import Encoding

    network = _network(context, 'segment')
    if not isinstance(enc, Encoding):
        raise ProgramError(f'segment: first argument is a {type(enc).__name__}, not an '
                           f'encoding from encode(...)')
    if not isinstance(target, str) or not target.strip():
        raise ProgramError('segment: target must be a non-empty text, e.g. "left hippocampus"')
    options = {}
    if getattr(getattr(network, 'config', None), 'dense', False) and not network.training:
        from vpcli.library.lesion_choice import lesion_chooser
        options['choose'] = lesion_chooser(network, enc, target.strip())
    with torch.set_grad_enabled(network.training and torch.is_grad_enabled()):
        result = network.segment(enc, target.strip(), phi=phi, **options)
    masks = result if isinstance(result, tuple) else (result,)
    for mask in masks:
        name = mask.description if len(masks) == 1 else \
            f'{mask.description} ({mask.sources[0].name})'
        context.saved.append(SavedVolume(name=name, volume=mask, sources=mask.sources,
                                         step=context.step, kind='mask'))
    return result

