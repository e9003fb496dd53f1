"""Loss terms of a joint training step: summed token cross-entropy, soft Dice and the live
vision network that scores every ``segment`` with it, and the code refresh's φ anchor."""

from __future__ import annotations

import math

import numpy as np
import torch


def summed_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy summed over the trained positions (targets -100 elsewhere)."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             targets.reshape(-1), ignore_index=-100,
                                             reduction='sum')


# -----------------------------------------------------------------------------
# the live vision network in a training run
# -----------------------------------------------------------------------------

def soft_dice_loss(probability: torch.Tensor, truth: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice between a probability volume and a binary truth (same shape)."""
    probability, truth = probability.reshape(-1), truth.reshape(-1).to(probability.dtype)
    overlap = (probability * truth).sum()
    return 1 - (2 * overlap + eps) / (probability.sum() + truth.sum() + eps)


class TrainingVision:
    """The vision network as a training run's ``context.vision``: every ``segment`` is
    scored against the case's ground truth (soft Dice, differentiable).

    Args:
        network: The vision network (in training mode).
        world: The case's ground truth (:class:`vpcli.tasks.oracle.SynthWorld`).
    """

    def __init__(self, network, world):
        self.network = network
        self.world = world
        self.losses: list[torch.Tensor] = []
        self.hard_dice: list[float] = []
        self.encodings: list = []
        self.error: str | None = None

    @property
    def training(self) -> bool:
        return self.network.training

    def encode(self, scans, phi=None):
        encoding = self.network.encode(scans, phi)
        self.encodings.append(encoding)
        return encoding

    def segment(self, encoding, target: str, phi=None):
        result = self.network.segment(encoding, target, phi)
        record = encoding.segmentations[-1]
        for group, probability in zip(encoding.sessions, record.probabilities):
            truth = self.world.mask_on(target, encoding.scans[group[0]].name).volume.tensor
            truth = truth.to(probability.tensor.device)
            self.losses.append(soft_dice_loss(probability.tensor, truth))
            with torch.no_grad():
                predicted = probability.tensor > 0.5
                both = (predicted & truth.bool()).sum().item()
                total = predicted.sum().item() + truth.bool().sum().item()
                self.hard_dice.append(2 * both / total if total else 1.0)
        return result


# -----------------------------------------------------------------------------
# the code refresh: cross-entropy with φ anchored to a frozen copy
# -----------------------------------------------------------------------------

def frozen_copy(agent, state: dict, device: str):
    """The language model ``agent`` with ``state``, frozen (the refresh's φ anchor)."""
    from vpcli.agent.model import AgentModel
    copy = AgentModel.from_checkpoint({**agent.checkpoint(), 'state': state},
                                      any_model_text=True).to(device).eval()
    for parameter in copy.parameters():
        parameter.requires_grad_(False)
    return copy


def refresh_loss(agent, teacher, ids: torch.Tensor, targets: torch.Tensor, encodings,
                 mod_id: int, phi_anchor_weight: float, mined: list[float] | None = None,
                 device: str = 'cpu') -> tuple[torch.Tensor, dict]:
    """Loss of a code refresh step on a batch: mean token cross-entropy + the φ anchor.

    The anchor is ``phi_anchor_weight`` · the mean squared change of φ at every ``<MOD>``
    (token id ``mod_id``) of the batch from the frozen ``teacher``'s, relative to the
    teacher φ's mean square. ``mined``: the hardness of the mined pool (its share above
    ln 2 is logged as ``hard_share``), None without mining.
    """
    logits, hidden, _ = agent(ids, encodings)
    ce = summed_ce(logits, targets) / max(int((targets != -100).sum()), 1)
    markers = ids == mod_id
    with torch.no_grad():
        _, anchor_hidden, _ = teacher(ids, encodings)
        anchor_phi = teacher.phi(anchor_hidden[markers])
    # relative: mean squared change of φ over φ's own mean square
    drift = torch.nn.functional.mse_loss(agent.phi(hidden[markers]), anchor_phi) \
        / anchor_phi.pow(2).mean().clamp_min(1e-8) if bool(markers.any()) \
        else torch.zeros((), device=device)
    parts = {'ce': float(ce.detach()), 'phi_drift': float(drift.detach())}
    if mined is not None:  # share of the scored pool the model may get wrong
        parts['hard_share'] = float(np.mean(np.asarray(mined) > math.log(2)))
    return ce + phi_anchor_weight * drift, parts
