from __future__ import annotations

import pytest
import torch

from tokunify.tokenizers.kmeans import KMeans, KMeansError
from tokunify.tokenizers.lda import LDAError, fit_lda, frame_labels


def nuisance_data(n: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes apart on axis 0 (spread 0.3); axis 1 carries a large label-free nuisance (spread 5)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) * torch.tensor([0.3, 5.0, 1.0, 1.0])
    x[:, 0] += 2.0 * y
    return x, y


def test_lda_keeps_the_class_axis_and_whitens_within_class():
    x, y = nuisance_data()
    proj, evals = fit_lda(x, y, dim=1)
    w = proj.weight[:, 0]
    assert abs(float(w[0])) / float(w.norm()) > 0.99  # the discriminant axis, not the big nuisance
    z = proj(x)[:, 0]  # [N]
    within = torch.cat([z[y == c] - z[y == c].mean() for c in range(3)])
    assert abs(float(within.var()) - 1.0) < 0.05  # W^T Sw W = I
    assert float(evals[0]) > 10  # class means ~6.7 within-class deviations apart
    # k-means on the projection separates the classes; on the raw features the nuisance wins
    purity = []
    for p in (proj, None):
        z = proj(x).float() if p is not None else x
        km = KMeans.fit(z, 3, seed=0)
        u = km.assign(z)
        purity.append(
            sum(
                int(torch.bincount(y[u == k], minlength=3).max())
                for k in range(3)
                if (u == k).any()
            )
            / len(y)
        )
    assert purity[0] > 0.95 and purity[1] < 0.8


def test_lda_errors():
    x, y = nuisance_data(100)
    with pytest.raises(LDAError, match="at most"):
        fit_lda(x, y, dim=3)  # 3 classes -> at most 2
    with pytest.raises(LDAError, match="labels"):
        fit_lda(x, y[:10], dim=1)


def test_kmeans_with_projection_saves_and_assigns_in_projected_space(tmp_path):
    x, y = nuisance_data(500)
    proj, _ = fit_lda(x, y, dim=2)
    km = KMeans(torch.randn(5, 2), proj)
    assert km.dim == 4 and km.k == 5
    brute = torch.cdist(proj(x), km.centroids.double()).argmin(1)
    assert torch.equal(km.assign(x), brute)
    km.save(tmp_path / "c.safetensors")
    back = KMeans.load(tmp_path / "c.safetensors")
    assert back.projection is not None and torch.equal(back.assign(x), km.assign(x))
    with pytest.raises(KMeansError, match=r"\[N, 4\]"):
        km.assign(torch.randn(3, 2))
    with pytest.raises(KMeansError, match="projection gives 2 dims"):
        KMeans(torch.randn(5, 3), proj)


def test_frame_labels_by_frame_centre():
    spans = [["a", 0.0, 0.05], ["b", 0.05, 0.1], ["c", 0.1, 0.2]]
    # 20 ms frames: centres 10, 30, 50, 70, 90, 110, 130 ms
    assert frame_labels(spans, 7, 50.0) == ["a", "a", "b", "b", "b", "c", "c"]
    with pytest.raises(LDAError):
        frame_labels([], 3, 50.0)
