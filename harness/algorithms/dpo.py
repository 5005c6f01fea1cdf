"""Sigmoid DPO loss on summed response log-probs (torch only).

loss = mean_pairs( -logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) )
       + nll_coef * mean_pairs( -pi_c / len_c )                          (optional)

The paper's main runs use neither length normalisation nor the NLL term; both are options.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _zero_loss(like: Tensor) -> Tensor:
    """A 0.0 loss that `backward()` accepts.

    If `like` is on an autograd graph the zero is `like.sum() * 0` (it stays on the graph
    and gives the model zero gradients); otherwise it is a fresh leaf
    `torch.zeros((), requires_grad=True)` (backward is a no-op for the model).
    """
    if like.requires_grad:
        return like.sum() * 0.0
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return torch.zeros((), dtype=dtype, device=like.device, requires_grad=True)


def _lengths(name: str, lengths: Tensor | None, like: Tensor, why: str) -> Tensor:
    if lengths is None:
        raise ValueError(f"{name} is required when {why}")
    lengths = torch.as_tensor(lengths, device=like.device)
    if lengths.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(lengths.shape)}, expected {tuple(like.shape)}")
    # An empty response (length 0) would divide by zero; count it as one token.
    return lengths.to(like.dtype).clamp(min=1.0)


def dpo_loss(
    pi_chosen: Tensor,
    pi_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    *,
    chosen_len: Tensor | None = None,
    rejected_len: Tensor | None = None,
    length_normalize: bool = False,
    nll_coef: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """DPO loss over N pairs and its stats.

    pi_*/ref_*: [N] summed response log-probs under the policy / reference (reference
    values are treated as constants). chosen_len/rejected_len: [N] response token counts,
    required by `length_normalize` (divide every summed log-prob by its length, policy and
    reference alike) and by `nll_coef > 0` (the NLL term is the chosen response's per-token
    NLL, always length-normalised).
    With N == 0 returns a zero loss (see `_zero_loss`) and all-zero stats with pairs = 0.
    stats: loss, reward_margin (mean beta * (chosen_logratio - rejected_logratio)),
    reward_accuracy (fraction of pairs with margin > 0), chosen_logratio,
    rejected_logratio (means, after length normalisation if on), pairs, and nll when
    nll_coef > 0.
    """
    tensors = (pi_chosen, pi_rejected, ref_chosen, ref_rejected)
    if any(t.dim() != 1 or t.shape != pi_chosen.shape for t in tensors):
        raise ValueError(f"DPO inputs must all be [N], got {[tuple(t.shape) for t in tensors]}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    n_pairs = pi_chosen.shape[0]
    if n_pairs == 0:
        stats = dict(
            loss=0.0, reward_margin=0.0, reward_accuracy=0.0, chosen_logratio=0.0, rejected_logratio=0.0, pairs=0.0
        )
        if nll_coef > 0:
            stats["nll"] = 0.0
        return _zero_loss(pi_chosen), stats

    ref_chosen, ref_rejected = ref_chosen.detach(), ref_rejected.detach()
    pi_c, pi_r, ref_c, ref_r = pi_chosen, pi_rejected, ref_chosen, ref_rejected
    if length_normalize:
        len_c = _lengths("chosen_len", chosen_len, pi_chosen, "length_normalize is on")
        len_r = _lengths("rejected_len", rejected_len, pi_chosen, "length_normalize is on")
        pi_c, ref_c = pi_c / len_c, ref_c / len_c
        pi_r, ref_r = pi_r / len_r, ref_r / len_r

    chosen_logratio = pi_c - ref_c
    rejected_logratio = pi_r - ref_r
    margin = beta * (chosen_logratio - rejected_logratio)
    loss = -F.logsigmoid(margin).mean()

    stats = {}
    if nll_coef > 0:
        len_c = _lengths("chosen_len", chosen_len, pi_chosen, "nll_coef > 0")
        nll = (-pi_chosen / len_c).mean()
        loss = loss + nll_coef * nll
        stats["nll"] = float(nll.detach())

    margin = margin.detach()
    stats.update(
        loss=float(loss.detach()),
        reward_margin=float(margin.mean()),
        reward_accuracy=float((margin > 0).float().mean()),
        chosen_logratio=float(chosen_logratio.detach().mean()),
        rejected_logratio=float(rejected_logratio.detach().mean()),
        pairs=float(n_pairs),
    )
    return loss, stats
