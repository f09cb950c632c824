"""k-means in torch: k-means++ init, mini-batch training, batched matmul assignment.

Written here rather than taken from scikit-learn because training and assignment must run on the
GPU next to the feature model and inside the tokenizer's batched path; sklearn's fitted models are
read once by :func:`convert_sklearn` (the only place that unpickles) and agree with ``predict``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tokunify.tokenizers.lda import Projection


class KMeansError(ValueError):
    pass


class KMeans:
    """Fitted centroids ``[K, d]`` and a batched nearest-centroid assignment.

    With a ``projection`` (e.g. LDA, :mod:`tokunify.tokenizers.lda`) the centroids live in the
    projected space: inputs ``[N, D]`` are projected to ``[N, d]`` before assignment. The
    projection is saved in the same file, so the centroids file is the whole learned quantizer.
    """

    def __init__(self, centroids: torch.Tensor, projection: Projection | None = None):
        if centroids.ndim != 2 or centroids.shape[0] < 1:
            raise KMeansError(f"centroids must be [K, D], got shape {tuple(centroids.shape)}")
        if projection is not None and projection.out_dim != centroids.shape[1]:
            raise KMeansError(
                f"projection gives {projection.out_dim} dims, centroids have {centroids.shape[1]}"
            )
        self.centroids = centroids.contiguous()  # [K, d], float32 or float64 as given
        self.projection = projection
        self._c64 = centroids.double().contiguous()
        self._sq = (self._c64**2).sum(1)  # [K]

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        """Input feature dim (before the projection, if any)."""
        return self.projection.in_dim if self.projection is not None else self.centroids.shape[1]

    def to(self, device: str | torch.device) -> KMeans:
        proj = self.projection.to(device) if self.projection is not None else None
        return KMeans(self.centroids.to(device), proj)

    def __repr__(self) -> str:
        proj = (
            f", projection={self.projection.in_dim}->{self.projection.out_dim}"
            if self.projection
            else ""
        )
        return f"KMeans(k={self.k}, dim={self.dim}{proj}, dtype={self.centroids.dtype})"

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` -> the space the centroids live in (identity without a projection)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise KMeansError(f"features must be [N, {self.dim}], got shape {tuple(x.shape)}")
        return self.projection(x) if self.projection is not None else x

    @torch.inference_mode()
    def assign(self, x: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """``[N, D]`` -> ``[N]`` nearest centroid, as argmin of ``|c|^2 - 2 x.c`` (one matmul per chunk).

        Computed in float64: SSL features are layer-normed (all norms ~ sqrt(D)), so in float32 the
        two large terms cancel and about 0.3% of frames pick a farther centroid (measured on HuBERT
        layer 6). The matmul is a fraction of a percent of the tokenizer's time either way.
        """
        return self._nearest(self.project(x), chunk)

    def _nearest(self, z: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Projected ``[N, d]`` -> ``[N]`` nearest centroid."""
        c = self._c64.to(z.device)
        sq = self._sq.to(z.device)
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for a in range(0, z.shape[0], chunk):
            zs = z[a : a + chunk].double()
            out[a : a + chunk] = torch.addmm(sq[None, :], zs, c.T, alpha=-2.0).argmin(1)  # [n, K]
        return out

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "tokunify.kmeans",
            "k": str(self.k),
            "dim": str(self.dim),
            **(metadata or {}),
        }
        tensors = {"centroids": self.centroids.cpu().contiguous()}
        if self.projection is not None:
            tensors["projection_mean"] = self.projection.mean.cpu().contiguous()
            tensors["projection_weight"] = self.projection.weight.cpu().contiguous()
            meta["projection"] = f"{self.projection.in_dim}->{self.projection.out_dim}"
        save_file(tensors, str(p), metadata=meta)
        return p

    @classmethod
    def load(cls, path: str | Path) -> KMeans:
        p = Path(path)
        if not p.is_file():
            raise KMeansError(f"{p}: centroids file not found")
        try:
            tensors = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise KMeansError(f"{p}: not a safetensors file ({e})") from e
        if "centroids" not in tensors:
            raise KMeansError(f"{p}: no 'centroids' tensor (has {sorted(tensors)})")
        proj = None
        if "projection_weight" in tensors:
            if "projection_mean" not in tensors:
                raise KMeansError(f"{p}: 'projection_weight' without 'projection_mean'")
            proj = Projection(tensors["projection_mean"], tensors["projection_weight"])
        try:
            return cls(tensors["centroids"], proj)
        except KMeansError as e:
            raise KMeansError(f"{p}: {e}") from e

    # ---- training ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        x: torch.Tensor,
        k: int,
        batch_size: int = 10000,
        max_iter: int = 100,
        init_size: int | None = None,
        seed: int = 0,
        tol: float = 1e-4,
    ) -> KMeans:
        """Mini-batch k-means (Sculley 2010) with k-means++ init, on ``x [N, D]`` on its device.

        Per-centre learning rate ``1 / count``; centres that end an epoch with no points are
        re-seeded from random samples. Stops after ``max_iter`` epochs or when the centres move
        less than ``tol`` (relative to the data variance).
        """
        if x.ndim != 2:
            raise KMeansError(f"features must be [N, D], got shape {tuple(x.shape)}")
        n = x.shape[0]
        if n < k:
            raise KMeansError(f"k-means needs at least k={k} feature frames, got {n}")
        x = x.float()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        init_size = min(n, init_size or max(3 * k, min(n, 20 * k)))
        sub = x[torch.randperm(n, generator=gen)[:init_size].to(x.device)]
        centroids = kmeans_plus_plus(sub, k, gen)  # [K, D]
        counts = torch.zeros(k, device=x.device)
        scale = float(x.var(0).sum()) + 1e-12
        batch_size = min(batch_size, n)
        for _ in range(max_iter):
            before = centroids.clone()
            perm = torch.randperm(n, generator=gen).to(x.device)
            for a in range(0, n, batch_size):
                xb = x[perm[a : a + batch_size]]  # [b, D]
                labels = KMeans(centroids).assign(xb)
                bc = torch.bincount(labels, minlength=k).float()  # [K]
                sums = torch.zeros_like(centroids).index_add_(0, labels, xb)  # [K, D]
                counts += bc
                hit = bc > 0
                lr = (bc[hit] / counts[hit])[:, None]
                centroids[hit] = (1 - lr) * centroids[hit] + lr * (sums[hit] / bc[hit][:, None])
            empty = counts == 0
            if empty.any():
                idx = torch.randint(0, n, (int(empty.sum()),), generator=gen).to(x.device)
                centroids[empty] = x[idx]
            shift = float(((centroids - before) ** 2).sum()) / scale
            if shift < tol and not empty.any():
                break
        return cls(centroids)

    def inertia(self, x: torch.Tensor) -> float:
        """Mean squared distance of ``x`` (projected, if there is a projection) to its nearest centroid."""
        z = self.project(x).double()
        labels = self._nearest(z)
        return float(((z - self._c64.to(x.device)[labels]) ** 2).sum(1).mean())


def kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) with 2 + log k local trials per centre."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(0, n, (1,), generator=gen))
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)  # [N]
    for _ in range(1, k):
        probs = (d2 / d2.sum()).cpu() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n)
        cand = torch.multinomial(probs, trials, replacement=True, generator=gen).to(x.device)  # [t]
        cd2 = torch.cdist(x[cand], x).pow(2)  # [t, N]
        new_d2 = torch.minimum(cd2, d2[None, :])  # [t, N]
        best = int(new_d2.sum(1).argmin())
        centres.append(x[cand[best]])
        d2 = new_d2[best]
    return torch.stack(centres).clone()  # [K, D]


def convert_sklearn(path: str | Path) -> KMeans:
    """Read a joblib-pickled scikit-learn (MiniBatch)KMeans, as fairseq's ``learn_kmeans.py`` writes.

    This unpickles the file: run it only on files you trust. Bundles never unpickle; they load the
    converted safetensors.
    """
    p = Path(path)
    if not p.is_file():
        raise KMeansError(f"{p}: k-means file not found")
    try:
        import joblib
    except ImportError as e:
        raise KMeansError("convert-kmeans needs joblib (pip install joblib scikit-learn)") from e
    try:
        model: Any = joblib.load(p)
    except Exception as e:
        raise KMeansError(f"{p}: cannot unpickle ({e})") from e
    centres = getattr(model, "cluster_centers_", None)
    if centres is None:
        raise KMeansError(
            f"{p}: {type(model).__name__} has no cluster_centers_; not a fitted k-means"
        )
    return KMeans(
        torch.as_tensor(centres)
    )  # keep sklearn's dtype: rounding centroids can flip near-ties
