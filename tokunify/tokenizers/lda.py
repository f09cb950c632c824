"""Linear discriminant analysis: a feature projection fitted on frame labels (e.g. phones).

The classic ASR front-end transform (spliced MFCC -> LDA, as in Kaldi's ``splice+LDA``): it keeps
the directions that separate the label classes relative to the spread within each class, so
variation that does not change the label (the speaker, mostly) shrinks. Units clustered in this
space are more speaker-independent. Fitted with ``tokunify train-kmeans --lda-dim D`` when the
manifest carries time-aligned labels; stored beside the centroids it quantizes for.

Written here (a scatter matrix, a Cholesky factor and a symmetric eigensolve in torch) because the
result must be saved as plain tensors and applied inside the batched tokenizer on any device;
scikit-learn is only an optional extra and its fitted models are pickles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class LDAError(ValueError):
    pass


@dataclass
class Projection:
    """``y = (x - mean) @ weight``: ``mean [D]``, ``weight [D, d]`` (float64)."""

    mean: torch.Tensor
    weight: torch.Tensor

    @property
    def in_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def out_dim(self) -> int:
        return self.weight.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` -> ``[N, d]`` in float64."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise LDAError(f"features must be [N, {self.in_dim}], got shape {tuple(x.shape)}")
        return (x.double() - self.mean.to(x.device)) @ self.weight.to(x.device)

    def to(self, device: str | torch.device) -> Projection:
        return Projection(self.mean.to(device), self.weight.to(device))


def fit_lda(
    x: torch.Tensor, labels: torch.Tensor, dim: int, shrinkage: float = 1e-4
) -> tuple[Projection, torch.Tensor]:
    """Fit LDA on ``x [N, D]`` with integer ``labels [N]``; returns the projection to ``dim``
    dimensions and the discriminant eigenvalues ``[dim]`` (between/within variance ratios).

    The projected within-class covariance is the identity, so Euclidean k-means in the projected
    space uses the within-class Mahalanobis distance. ``shrinkage`` adds that fraction of the mean
    within-class variance to the diagonal, which keeps rank-deficient inputs (e.g. spliced,
    correlated frames) solvable.
    """
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise LDAError(
            f"need x [N, D] and labels [N], got {tuple(x.shape)} and {tuple(labels.shape)}"
        )
    n, d_in = x.shape
    classes, inv = labels.unique(return_inverse=True)
    n_cls = len(classes)
    if not 1 <= dim <= min(d_in, n_cls - 1):
        raise LDAError(
            f"LDA dim {dim} out of range: at most min(feature dim {d_in}, classes - 1 = {n_cls - 1})"
        )
    x = x.double()
    mean = x.mean(0)  # [D]
    xc = x - mean  # [N, D]
    counts = torch.bincount(inv, minlength=n_cls).double()  # [C]
    mu = torch.zeros(n_cls, d_in, dtype=torch.float64, device=x.device).index_add_(0, inv, xc)
    mu = mu / counts[:, None]  # [C, D] class means (centred)
    within = xc - mu[inv]  # [N, D]
    sw = within.T @ within / n  # [D, D]
    sb = (mu * counts[:, None]).T @ mu / n  # [D, D]
    sw = sw + shrinkage * torch.trace(sw) / d_in * torch.eye(d_in, dtype=sw.dtype, device=sw.device)
    chol = torch.linalg.cholesky(sw)  # sw = L L^T
    l_inv = torch.linalg.solve_triangular(
        chol, torch.eye(d_in, dtype=sw.dtype, device=sw.device), upper=False
    )
    evals, evecs = torch.linalg.eigh(l_inv @ sb @ l_inv.T)  # ascending
    order = evals.argsort(descending=True)[:dim]
    weight = l_inv.T @ evecs[:, order]  # [D, dim]: W^T Sw W = I
    return Projection(mean.cpu(), weight.cpu()), evals[order].cpu()


def frame_labels(
    spans: list[tuple[str, float, float]] | list[list], n_frames: int, frame_rate: float
) -> list[str]:
    """Time-aligned ``(label, start_s, end_s)`` spans -> one label per frame (by frame centre).

    Frames before the first span take the first label; frames after the last take the last.
    """
    if not spans:
        raise LDAError("no labelled spans")
    starts = torch.tensor([float(s[1]) for s in spans], dtype=torch.float64)  # [S]
    centres = (torch.arange(n_frames, dtype=torch.float64) + 0.5) / frame_rate  # [T]
    idx = (torch.searchsorted(starts, centres, right=True) - 1).clamp(min=0)  # [T]
    return [str(spans[i][0]) for i in idx.tolist()]
