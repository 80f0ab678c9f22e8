"""Brute-force references: the full n x n correlation matrix, built the obvious way. Test use only."""

import torch


def correlation_matrix(acts: torch.Tensor) -> torch.Tensor:
    """C_ij = f_i.f_j / (|f_i||f_j|) for all i, j (0 where a column is all zero), in float64."""
    a = acts.double()
    norms = a.norm(dim=0)
    normed = torch.where(norms > 0, a / norms.clamp_min(1e-300), torch.zeros_like(a))
    return normed.T @ normed


def ranked_pairs(acts: torch.Tensor) -> list[tuple[float, int, int]]:
    """All pairs i < j with C_ij > 0 as (C, i, j), sorted by C descending, then i, then j."""
    c = correlation_matrix(acts)
    n = c.shape[0]
    out = [(float(c[i, j]), i, j) for i in range(n) for j in range(i + 1, n) if c[i, j] > 0]
    out.sort(key=lambda t: (-t[0], t[1], t[2]))
    return out


def naive_decoder_penalty(W_dec: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} (d^_i . d^_j)^2 as a literal double loop over rows."""
    n = W_dec.shape[0]
    normed = [w / w.norm() if w.norm() > 0 else w * 0 for w in W_dec]
    total = W_dec.new_zeros(())
    for i in range(n):
        for j in range(n):
            if i != j:
                total = total + (normed[i] @ normed[j]) ** 2
    return total
