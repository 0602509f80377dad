"""Muon for the hidden matrices and AdamW for the rest, as one optimizer.

Muon (Jordan et al. 2024; `torch.optim.Muon`) orthogonalizes each 2-D weight's momentum
with a Newton-Schulz iteration before the update: every direction of the matrix moves by
about as much. It is meant for the matrices inside the blocks; embeddings, the LM head and
the 1-D gains and biases stay with AdamW. Lightning's automatic optimization steps a single
optimizer (one closure, one gradient clipping, one step count), so both live in one.
"""

from __future__ import annotations

import torch
from torch.optim import AdamW, Muon, Optimizer


class MuonWithAdamW(Optimizer):
    """Muon over the param groups named "hidden" (`GPT.param_groups`), AdamW over the
    others. The groups are the two optimizers' own dicts, so a schedule that sets each
    group's lr (from its own base lr) drives both; state and checkpoints are one optimizer's.

    lr, momentum, nesterov, ns_steps, muon_weight_decay, adjust_lr_fn: Muon's (its lr is
    scaled per matrix by adjust_lr_fn, torch's "original": sqrt(max(1, rows / cols))).
    adamw_lr, betas, eps, weight_decay, fused: AdamW's, for the other groups.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        muon_weight_decay: float = 0.0,
        adjust_lr_fn: str | None = None,
        adamw_lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ):
        groups = list(params)
        if not all(isinstance(g, dict) and "name" in g for g in groups):
            raise ValueError(
                "MuonWithAdamW needs named parameter groups (GPT.param_groups()): the groups "
                'named "hidden" go to Muon'
            )
        hidden = [g for g in groups if g["name"] == "hidden"]
        others = [g for g in groups if g["name"] != "hidden"]
        if not hidden or not others:
            raise ValueError(
                f"MuonWithAdamW needs a 'hidden' group and at least one other, got "
                f"{[g['name'] for g in groups]}"
            )
        self.muon = Muon(
            hidden,
            lr=lr,
            weight_decay=muon_weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        self.adamw = AdamW(
            others, lr=adamw_lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused
        )
        super().__init__(self.muon.param_groups + self.adamw.param_groups, defaults={})
        self._share()

    def _share(self) -> None:
        """Both optimizers work on this one's group dicts and state (disjoint parameters)."""
        n_muon = len(self.muon.param_groups)
        self.muon.param_groups = self.param_groups[:n_muon]
        self.adamw.param_groups = self.param_groups[n_muon:]
        self.muon.state = self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's: forward and backward
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces the group dicts and the state
        self._share()
