"""Ridge / min-norm least squares for every prefix of every prompt at once.

For a prompt with points ``x_0 .. x_{n-1}`` we need, for each prefix length ``i``,

    ŵ_i = (X_iᵀX_i + λI)⁻¹ X_iᵀ y_i        (λ > 0, ridge)
    ŵ_i = X_i⁺ y_i                          (λ = 0, min-norm least squares)

where ``X_i`` holds the first ``i`` points. Solving ``batch * n_points`` separate d×d systems
is dominated by per-matrix overhead, so the fast path below uses the nested structure of
prefixes and needs only a few small factorizations *per prompt* plus batched matmuls. Write
``m = min(n - 1, d)`` for the size of the leading block ``X_T = X[:m]`` (the last point is only
ever a query, so ``n - 1`` points appear in contexts).

Phase 1, prefixes ``i <= m`` (kernel form). ``ŵ_i = X_iᵀ (X_iX_iᵀ + λI)⁻¹ y_i`` and
``X_iX_iᵀ + λI`` is the leading ``i × i`` block of ``K = X_TX_Tᵀ + λI = LLᵀ``. The leading block
of a Cholesky factor is the factor of the leading block, so with ``Q = L⁻¹X_T`` (rows q_j) and
``z = L⁻¹y_T``, ``ŵ_i = (L_i⁻¹X_i)ᵀ(L_i⁻¹y_i) = Σ_{j<i} z_j q_j``: a cumulative sum. For λ = 0
this is Gram–Schmidt on the points in order, i.e. the min-norm interpolant.

Phase 2, prefixes ``i > m = d`` (only when ``n - 1 > d``). Let ``H = X_TᵀX_T + λI = FFᵀ``,
``c_j = F⁻¹x_j`` for the later points and ``g_i = F⁻¹(X_Tᵀy_T + Σ_{d<=j<i} x_j y_j)``. Then

    ŵ_i = F⁻ᵀ (I + C_iᵀC_i)⁻¹ g_i = F⁻ᵀ (g_i − C_iᵀ(I + C_iC_iᵀ)⁻¹C_i g_i)     (Woodbury)

and ``I + C_iC_iᵀ`` is again the leading block of one matrix ``S = I + CCᵀ = L_SL_Sᵀ``; with
``P = L_S⁻¹C`` (rows p_j), ``ŵ_i = F⁻ᵀ(g_i − Σ_{d<=j<i} p_j (p_j·g_i))``: one masked batched
matmul for all i. For λ > 0, ``F`` is the Cholesky factor of ``H``; for λ = 0 we take
``F = X_Tᵀ`` itself, so ``c_j = X_T⁻ᵀx_j``, ``g`` starts at ``y_T`` and ``F⁻ᵀ = X_T⁻¹ = X_TᵀK⁻¹``,
which reuses the Phase-1 factor.

Validity and accuracy. The fast path needs the leading block to be well conditioned. With
``‖K⁻¹‖₂ <= ‖L⁻¹‖_F²`` it is used for a prompt only when ``‖X_ctx‖_F²·‖L⁻¹‖_F² <=
FAST_PATH_MAX_COND`` (1e10: the leading block's singular values span at most 1e5, where errors
stay around 1e-8 relative in float64, see the tests) and, for least squares, ``<= 1/rcond²``,
which guarantees that no singular value of any prefix design is below ``rcond·σ_max``, so the
cut-off could not have applied. Appending points only raises the smallest singular value, and
removing rows from a full-row-rank block keeps the smallest non-zero one at least as large
(interlacing), so the check on the leading block covers every prefix. Every other prompt
(rank-deficient or ill-conditioned leading block, e.g. duplicated points) goes to the exact
fallback: an SVD of each zero-padded prefix design with filter factors ``1/s`` for
``s > rcond·s_max`` (least squares) or ``s/(s²+λ)`` (ridge). Coordinates that are zero in every
point of the batch (curriculum padding) are dropped before solving; they get weight 0, which is
exact for both estimators.
"""

from __future__ import annotations

import torch
from torch import Tensor

FAST_PATH_MAX_COND = 1e10


def prefix_ridge_weights(x: Tensor, y: Tensor, alpha: float, rcond: float) -> Tensor:
    """ŵ for every prefix: ``x`` (B, n, d), ``y`` (B, n) -> (B, n, d) in ``x.dtype``.

    ``alpha > 0``: ridge ``(XᵀX + αI)⁻¹Xᵀy``; ``alpha == 0``: min-norm least squares ``X⁺y``
    with singular values ``<= rcond·σ_max`` (of each prefix design) treated as zero.
    Row ``i`` is fitted on points ``0..i-1``; row 0 is 0. Use float64 inputs.
    """
    B, n, d = x.shape
    # coordinates that are non-zero somewhere (max-abs reduction: fast, exact)
    active = torch.linalg.vector_norm(x, ord=float("inf"), dim=(0, 1)) > 0
    if not bool(active.all()):
        w = x.new_zeros(B, n, d)
        if bool(active.any()):
            w[..., active] = prefix_ridge_weights(x[..., active], y, alpha, rcond)
        return w
    if n <= 1:
        return x.new_zeros(B, n, d)
    w, ok = _fast_path(x, y, alpha, rcond)
    if bool(ok.all()):
        return w
    bad = (~ok).nonzero().squeeze(-1)
    return w.index_put((bad,), _spectral_path(x[bad], y[bad], alpha, rcond))


def _fast_path(x: Tensor, y: Tensor, alpha: float, rcond: float) -> tuple[Tensor, Tensor]:
    """Nested-prefix solution; ``ok[b]`` says whether prompt ``b`` may use it (see module doc)."""
    B, n, d = x.shape
    nc = n - 1
    m = min(nc, d)
    eye_m = torch.eye(m, dtype=x.dtype, device=x.device)
    xt, yt = x[:, :m], y[:, :m]

    # Phase 1: prefixes 1..m from the Cholesky factor of the leading kernel block.
    k = xt @ xt.mT
    if alpha > 0:
        k.diagonal(dim1=-2, dim2=-1).add_(alpha)
    l1, info = torch.linalg.cholesky_ex(k)
    ok = info == 0
    if not bool(ok.all()):
        l1 = torch.where(ok[:, None, None], l1, eye_m)
    l1inv = torch.linalg.solve_triangular(l1, eye_m.expand(B, m, m), upper=False)
    inv_fro2 = torch.linalg.vector_norm(l1inv, dim=(-2, -1)).square()
    ctx_fro2 = torch.linalg.vector_norm(x[:, :nc], dim=(-2, -1)).square()
    limit = FAST_PATH_MAX_COND if alpha > 0 else min(FAST_PATH_MAX_COND, rcond**-2)
    ok = ok & torch.isfinite(inv_fro2) & (ctx_fro2 * inv_fro2 <= limit)
    if not bool(ok.all()):
        l1inv = torch.where(ok[:, None, None], l1inv, eye_m)
    q = l1inv @ xt                                           # rows q_j, (B, m, d)
    z = (l1inv * yt[:, None, :]).sum(-1)                     # L⁻¹ y_T, (B, m)
    w = x.new_zeros(B, n, d)
    w[:, 1:m + 1] = torch.cumsum(z[..., None] * q, dim=1)

    p = nc - m
    if p == 0:
        return w, ok
    # Phase 2 (m == d): prefixes d+1..nc by nested Woodbury updates of the leading block.
    xd, yd = x[:, m:nc], y[:, m:nc]
    if alpha == 0:
        ainv = q.mT @ l1inv                                  # X_T⁻¹ = X_TᵀK⁻¹ = QᵀL⁻¹
        c = xd @ ainv                                        # rows c_j = X_T⁻ᵀ x_j
        g0 = yt                                              # u = X_T w: fitted values
        back = ainv.mT                                       # ŵᵀ = uᵀ X_T⁻ᵀ
    else:
        h = xt.mT @ xt
        h.diagonal(dim1=-2, dim2=-1).add_(alpha)
        l2, info2 = torch.linalg.cholesky_ex(h)
        ok = ok & (info2 == 0)
        if not bool(ok.all()):
            l2 = torch.where(ok[:, None, None], l2, eye_m)
        l2inv = torch.linalg.solve_triangular(l2, eye_m.expand(B, d, d), upper=False)
        c = xd @ l2inv.mT                                    # rows c_j = L2⁻¹ x_j
        g0 = (l2inv * (xt * yt[..., None]).sum(1)[:, None, :]).sum(-1)   # L2⁻¹ X_Tᵀ y_T
        back = l2inv                                         # ŵᵀ = uᵀ L2⁻¹
    s = c @ c.mT
    s.diagonal(dim1=-2, dim2=-1).add_(1.0)
    ls, _ = torch.linalg.cholesky_ex(s)                      # S >= I: positive definite
    pp = torch.linalg.solve_triangular(ls, c, upper=False)   # rows p_j, (B, p, d)
    g = g0[:, None, :] + torch.cumsum(c * yd[..., None], dim=1)   # row k: after k+1 points
    coef = (g @ pp.mT).tril_()                               # row k uses p_j for j <= k
    w[:, m + 1:] = torch.baddbmm(g, coef, pp, alpha=-1) @ back   # (g − coef·P) F⁻ᵀ
    return w, ok


def _spectral_path(x: Tensor, y: Tensor, alpha: float, rcond: float) -> Tensor:
    """Exact per-prefix solution via the SVD of each zero-padded prefix design matrix.

    Memory: ``B·(n-1)²·d`` values for the padded designs.
    """
    B, n, d = x.shape
    nc = n - 1
    idx = torch.arange(nc, device=x.device)
    keep = (idx[None, :] <= idx[:, None]).to(x.dtype)        # prefix i+1 uses points j <= i
    xm = x[:, None, :nc, :] * keep[None, :, :, None]          # (B, nc, nc, d)
    ym = y[:, None, :nc] * keep[None]                          # (B, nc, nc)
    u, s, vh = torch.linalg.svd(xm, full_matrices=False)
    if alpha > 0:
        f = s / (s * s + alpha)
    else:
        big = s > rcond * s[..., :1]
        f = torch.where(big, 1.0 / torch.where(big, s, torch.ones_like(s)), torch.zeros_like(s))
    coef = f * (u.mT @ ym[..., None])[..., 0]
    w = (vh.mT @ coef[..., None])[..., 0]                     # (B, nc, d)
    return torch.cat([x.new_zeros(B, 1, d), w], dim=1)
