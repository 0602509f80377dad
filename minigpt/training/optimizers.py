"""Muon for the hidden matrices and AdamW for the rest, as one optimizer.

Muon (Jordan et al. 2024; `torch.optim.Muon`) orthogonalizes each 2-D weight's momentum
with a Newton-Schulz iteration before the update: every direction of the matrix moves by
about as much. It is meant for the matrices inside the blocks; embeddings, the LM head and
the 1-D gains and biases stay with AdamW. Lightning's automatic optimization steps a single
optimizer (one closure, one gradient clipping, one step count), so both live in one.

Across devices (`DistributedMuon`), each matrix is orthogonalized once, by the rank that owns
it, and the result sent to the ranks that hold it, as in Jordan's distributed Muon: under
DDP every rank holds every whole matrix; under FSDP each holds rows of it, which the owner
gathers first. torch's Muon would repeat the whole work on every rank (DDP), or run it on
DTensors that gather each matrix onto every rank (FSDP).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard
from torch.optim import AdamW, Muon, Optimizer
from torch.optim._muon import _adjust_lr

from minigpt.training.precision import newton_schulz_dtype
from minigpt.training.sharding import local_tensor


def row_counts(rows: int, ranks: int) -> list[int]:
    """The rows of a matrix each rank holds under FSDP's Shard(0): torch.chunk's split (a
    rank past the last chunk holds none)."""
    per_rank = -(-rows // ranks)
    return [max(0, min(per_rank, rows - k * per_rank)) for k in range(ranks)]


NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


# Polar Express (Amsel et al. 2025): one quintic per step, each the best for the range of
# singular values the steps before it leave, computed for 5 steps with a safety factor of
# 1.02 and a cushion of 2 (the paper's method; the coefficients modded-nanogpt uses). The
# input is divided by 1.02 times its norm first. After 5 steps, singular values spread over
# 1e-3 to 1 end between about 0.55 and 1.14, where Jordan's fixed quintic leaves 0.29 to 1.19.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02
NS_METHODS = ("jordan", "polar_express")


def newton_schulz(
    update: torch.Tensor, coefficients, steps: int, eps: float, dtype, gram_space=False
):
    """torch.optim.Muon's orthogonalization (Jordan's quintic Newton-Schulz iteration, the
    same operations in the same order) computed in `dtype`: torch's is bfloat16, fast on
    GPUs; float32 is faster on CPUs without bfloat16 matrix units (25x here).
    coefficients: one (a, b, c) for every step, or POLAR_EXPRESS (a quintic per step, the
    first `steps` of them, the input's norm taken 1.02 times). gram_space: the same iteration
    computed in the short side's Gram space (`gram_newton_schulz`) where that is cheaper
    (`gram_space_pays`), in float32 or float64 only; in bfloat16 the direct one."""
    per_step = coefficients is POLAR_EXPRESS
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    norm = x.norm() * POLAR_EXPRESS_SAFETY if per_step else x.norm()
    x = x.div(norm.clamp(min=eps))
    each_step = coefficients[:steps] if per_step else [coefficients] * steps
    if gram_space and dtype in (torch.float32, torch.float64) and gram_space_pays(x.shape, steps):
        x = gram_newton_schulz(x, each_step)
    else:
        for a, b, c in each_step:
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def gram_space_pays(shape, steps: int) -> bool:
    """Whether `gram_newton_schulz` multiplies less than the direct iteration on a short x
    long matrix: 2 short^2 long + (4 steps - 3) short^3 against steps short^2 (2 long +
    short) multiply-adds, fewer when long > 1.5 short (and more than one step)."""
    short, long = sorted(shape[:2])
    return steps > 1 and 2 * long > 3 * short


def gram_newton_schulz(x: torch.Tensor, each_step) -> torch.Tensor:
    """The quintic iteration X <- a X + (b A + c A^2) X, A = X X^T, on a wide X (short x
    long), computed on short x short matrices: every X_k is M_k X_0, so with A_0 = X_0 X_0^T,
    A_k = M_k A_0 M_k^T and M_{k+1} = (a I + b A_k + c A_k^2) M_k; X_0 is multiplied twice,
    for A_0 and for the result. The same polynomial of X_0, rounded differently."""
    start = x @ x.T  # A_0
    gram, m = start, None
    for step, (a, b, c) in enumerate(each_step):
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        polynomial.diagonal().add_(a)
        m = polynomial if m is None else polynomial @ m
        if step + 1 < len(each_step):
            gram = m @ start @ m.T
    return m @ x


def iteration_cost(shape) -> int:
    """Newton-Schulz's multiply-adds on a rows x cols matrix, up to a constant: each step
    multiplies the short side's Gram matrix (short^2 x long, twice, and short^3)."""
    short, long = sorted(shape[:2])
    return short * short * (2 * long + short)


def padded(piece: torch.Tensor | None, size: int, dtype, device) -> torch.Tensor:
    """`size` numbers of `dtype`: the piece's, flattened, then zeros (all zeros for None):
    gloo's collectives move tensors of one size only."""
    message = torch.zeros(size, dtype=dtype, device=device)
    if piece is not None:
        message[: piece.numel()] = piece.flatten()
    return message


def all_to_all(pieces: list, size: int, ranks: int, group, device, dtype) -> list[torch.Tensor]:
    """Sends pieces[k] (or nothing, None or past the list's end) to rank k; returns what
    each rank sent this one. Every message is padded to `size` numbers of the iteration's
    dtype (gloo's all-to-all moves tensors of one size only), which loses nothing: the
    iteration rounds its input to that dtype first, and its result is in it."""
    pieces = list(pieces) + [None] * (ranks - len(pieces))
    send = [padded(piece, size, dtype, device) for piece in pieces]
    received = [torch.empty_like(send[0]) for _ in range(ranks)]
    dist.all_to_all(received, send, group=group)
    return received


class DistributedMuon(Muon):
    """torch.optim.Muon (the same options and updates) whose Newton-Schulz work is split
    across the data-parallel ranks. The momentum is elementwise, so each rank keeps it for
    what it holds: whole matrices (DDP), or its rows of each (FSDP, `Shard(0)` DTensors).
    Then, W matrices at a time, matrix j goes to rank j, which orthogonalizes it; under DDP
    the results are all-gathered, under FSDP the owner first gathers the matrix's rows and
    then sends each rank its rows of the result (two all-to-alls). In one process, or
    without an initialized process group, it steps as torch's Muon does, to the bit.

    Plain tensors in an initialized process group of several ranks are taken to be DDP's
    replicas (the same gradients on every rank). ns_dtype: the iteration's ("bfloat16",
    torch's; "float32"; or "auto": bfloat16 where the device multiplies it natively, else
    float32, `newton_schulz_dtype`). ns_method: "jordan" (torch's coefficients, the same
    every step) or "polar_express" (`POLAR_EXPRESS`, at most 5 steps).
    momentum_warmup_steps: the momentum rises linearly from momentum_start to `momentum`
    over this many steps (modded-nanogpt: 0.85 to 0.95 over 300); 0, none. ns_gram: the
    iteration computed in the Gram space where that multiplies less (`gram_newton_schulz`;
    float32 only, the same result up to rounding). The other arguments are torch's Muon's."""

    def __init__(
        self,
        params,
        ns_dtype: str = "bfloat16",
        ns_method: str = "jordan",
        momentum_warmup_steps: int = 0,
        momentum_start: float = 0.85,
        ns_gram: bool = False,
        **kwargs,
    ):
        if ns_dtype not in (*NS_DTYPES, "auto"):
            raise ValueError(
                f"optimizer.ns_dtype={ns_dtype!r} is not one of {', '.join(NS_DTYPES)}, auto"
            )
        if ns_method not in NS_METHODS:
            raise ValueError(
                f"optimizer.ns_method={ns_method!r} is not one of {', '.join(NS_METHODS)}"
            )
        steps = kwargs.get("ns_steps", 5)
        if ns_method == "polar_express" and not 1 <= steps <= len(POLAR_EXPRESS):
            raise ValueError(
                f"optimizer.ns_steps={steps}: Polar Express has coefficients for 1 to "
                f"{len(POLAR_EXPRESS)} steps"
            )
        if isinstance(momentum_warmup_steps, bool) or not (
            isinstance(momentum_warmup_steps, int) and momentum_warmup_steps >= 0
        ):
            raise ValueError(
                f"optimizer.momentum_warmup_steps={momentum_warmup_steps!r} must be an "
                "integer >= 0 (0: no warm-up)"
            )
        if not 0.0 <= momentum_start < 1.0:
            raise ValueError(f"optimizer.momentum_start={momentum_start!r} must be in [0, 1)")
        if not isinstance(ns_gram, bool):
            raise ValueError(f"optimizer.ns_gram={ns_gram!r} must be true or false")
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype
        self.ns_method = ns_method
        self.momentum_warmup_steps = momentum_warmup_steps
        self.momentum_start = momentum_start
        self.ns_gram = ns_gram

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            updates = [self._momentum_update(p, group) for p in params]
            orthogonal = self._orthogonalize(params, updates, group)
            for p, update in zip(params, orthogonal, strict=True):
                weights = local_tensor(p)
                weights.mul_(1 - group["lr"] * group["weight_decay"])
                weights.add_(update, alpha=-_adjust_lr(group["lr"], group["adjust_lr_fn"], p.shape))
        return loss

    def _momentum_update(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        momentum = group["momentum"]
        if self.momentum_warmup_steps:  # the steps this matrix has taken, kept in its state
            done = state.get("step", 0)
            share = min(done / self.momentum_warmup_steps, 1.0)
            momentum = self.momentum_start + share * (momentum - self.momentum_start)
            state["step"] = done + 1
        grad, buf = local_tensor(p.grad), local_tensor(state["momentum_buffer"])
        buf.lerp_(grad, 1 - momentum)
        return grad.lerp(buf, momentum) if group["nesterov"] else buf

    def _orthogonalize(self, params, updates, group) -> list[torch.Tensor]:
        device = local_tensor(params[0]).device if params else torch.device("cpu")
        dtype = newton_schulz_dtype(device) if self.ns_dtype == "auto" else NS_DTYPES[self.ns_dtype]

        def orthogonal(update):
            coefficients, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]
            if self.ns_method == "polar_express":
                coefficients = POLAR_EXPRESS
            return newton_schulz(update, coefficients, steps, eps, dtype, self.ns_gram)

        sharded = [isinstance(p, DTensor) for p in params]
        if any(sharded) and not all(sharded):
            raise ValueError("DistributedMuon: some hidden matrices are sharded, some not")
        if not any(sharded) and (not dist.is_initialized() or dist.get_world_size() == 1):
            return [orthogonal(u) for u in updates]
        # the costliest matrices first, so that the W of a round cost about the same
        # (the round waits for its slowest rank) and pad each other's messages little
        order = sorted(range(len(params)), key=lambda i: -iteration_cost(params[i].shape))
        params, updates = [params[i] for i in order], [updates[i] for i in order]
        if any(sharded):
            results = self._orthogonalize_sharded(params, updates, orthogonal, dtype)
        else:
            results = self._orthogonalize_replicated(updates, orthogonal, dtype)
        out = [None] * len(order)
        for place, i in enumerate(order):
            out[i] = results[place]
        return out

    @staticmethod
    def _orthogonalize_replicated(updates, orthogonal, dtype) -> list[torch.Tensor]:
        ranks, rank = dist.get_world_size(), dist.get_rank()
        out = []
        for start in range(0, len(updates), ranks):
            block = updates[start : start + ranks]
            size = max(u.numel() for u in block)
            result = orthogonal(block[rank]) if rank < len(block) else None
            mine = padded(result, size, dtype, block[0].device)
            gathered = [torch.empty_like(mine) for _ in range(ranks)]
            dist.all_gather(gathered, mine)
            out += [g[: u.numel()].view(u.shape) for g, u in zip(gathered, block, strict=False)]
        return out

    @staticmethod
    def _orthogonalize_sharded(params, updates, orthogonal, dtype) -> list[torch.Tensor]:
        mesh = params[0].device_mesh
        if mesh.ndim != 1 or any(p.placements != (Shard(0),) for p in params):
            raise ValueError(
                "DistributedMuon shards by rows over one mesh dimension (FSDP's Shard(0)); "
                f"got placements {params[0].placements} on a {mesh.ndim}-D mesh"
            )
        group, ranks, rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
        device, out = updates[0].device, []
        for start in range(0, len(params), ranks):
            block = list(range(start, min(start + ranks, len(params))))
            rows = {i: row_counts(params[i].shape[0], ranks) for i in block}
            cols = {i: params[i].shape[1] for i in block}
            for i in block:
                if updates[i].shape[0] != rows[i][rank]:
                    raise ValueError(
                        f"DistributedMuon: rank {rank} holds {updates[i].shape[0]} rows of a "
                        f"{tuple(params[i].shape)} matrix, expected {rows[i][rank]}"
                    )
            size = max(rows[i][k] * cols[i] for i in block for k in range(ranks))

            # each rank sends the owner of matrix j (rank j) its rows of j
            received = all_to_all([updates[i] for i in block], size, ranks, group, device, dtype)
            pieces: list[torch.Tensor | None] = [None] * ranks
            if rank < len(block):
                i = block[rank]
                whole = torch.cat(
                    [
                        r[: n * cols[i]].view(n, cols[i])
                        for r, n in zip(received, rows[i], strict=True)
                    ]
                )
                result = orthogonal(whole)
                pieces = list(result.split(rows[i]))
            # each owner sends every rank its rows of the result
            received = all_to_all(pieces, size, ranks, group, device, dtype)
            out += [
                r[: rows[i][rank] * cols[i]].view(rows[i][rank], cols[i])
                for r, i in zip(received, block, strict=False)
            ]
        return out


class MuonWithAdamW(Optimizer):
    """Muon over the param groups named "hidden" (`GPT.param_groups`), AdamW over the
    others. The groups are the two optimizers' own dicts, so a schedule that sets each
    group's lr (from its own base lr) drives both; state and checkpoints are one optimizer's.

    lr, momentum, nesterov, ns_steps, ns_dtype, ns_method, ns_gram, momentum_warmup_steps,
    momentum_start, muon_weight_decay, adjust_lr_fn: Muon's (`DistributedMuon`; its lr is
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
        ns_dtype: str = "bfloat16",
        ns_method: str = "jordan",
        ns_gram: bool = False,
        momentum_warmup_steps: int = 0,
        momentum_start: float = 0.85,
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
        self.muon = DistributedMuon(
            hidden,
            lr=lr,
            weight_decay=muon_weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_dtype=ns_dtype,
            ns_method=ns_method,
            ns_gram=ns_gram,
            momentum_warmup_steps=momentum_warmup_steps,
            momentum_start=momentum_start,
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
