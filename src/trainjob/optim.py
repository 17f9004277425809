"""Optimisers the recipes need that torch.optim lacks: Muon (momentum orthogonalised by Newton-Schulz) for conv
filters, as airbench94_muon (KellerJordan/cifar10-airbench) uses it."""

import torch


def orthogonalize(g: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Newton-Schulz's approximation of U V^T for g = U S V^T (2-D): airbench94_muon's quintic iteration, tuned to
    push every singular value near 1 in few steps (to ~0.5-1.5: as good for training as exactly 1)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    x = x / (x.norm() + 1e-7)  # every singular value <= 1
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for conv filters, as airbench94_muon: Nesterov momentum, then each filter tensor rescaled to norm
    sqrt(out channels) and stepped by the orthogonalised momentum (out channels x the rest, as a matrix).

    Written here because torch.optim.Muon takes 2-D parameters only and decays weights where this renormalises them
    (BN follows every conv, so a filter's scale is free, and the fixed norm keeps the effective step fixed).
    """

    def __init__(self, params, lr: float, momentum: float, steps: int, dtype: torch.dtype = torch.float32):
        super().__init__(params, {"lr": lr, "momentum": momentum, "steps": steps})
        self.dtype = dtype  # of the iteration's matmuls: bf16 where the CPU has it natively

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buffer = state["momentum_buffer"].mul_(group["momentum"]).add_(p.grad)
                update = p.grad.add(buffer, alpha=group["momentum"])  # Nesterov
                p.mul_(len(p) ** 0.5 / p.norm())
                update = orthogonalize(update.reshape(len(p), -1), group["steps"], self.dtype).view_as(p)
                p.add_(update, alpha=-group["lr"])
