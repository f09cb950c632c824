from __future__ import annotations

import joblib
import numpy as np
import pytest
import torch

from tokunify.cli import main
from tokunify.tokenizers.kmeans import KMeans, KMeansError, convert_sklearn


def blobs(n_per=200, k=6, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    x = centres.repeat_interleave(n_per, 0) + torch.randn(k * n_per, dim, generator=g)
    return x, centres


def test_fit_recovers_separated_clusters():
    x, centres = blobs()
    km = KMeans.fit(x, 6, batch_size=256, seed=1)
    # every true centre has a fitted centroid close by
    d = torch.cdist(centres, km.centroids).min(1).values
    assert float(d.max()) < 0.5
    assert km.inertia(x) < 1.5 * 8  # ~ dim * noise variance


def test_assign_is_nearest_centroid():
    x, _ = blobs(50, 5, 16, seed=2)
    km = KMeans(torch.randn(40, 16))
    brute = torch.cdist(x, km.centroids).argmin(1)
    assert torch.equal(km.assign(x, chunk=37), brute)


def test_save_load_and_errors(tmp_path):
    km = KMeans(torch.randn(7, 3))
    p = km.save(tmp_path / "c.safetensors")
    assert torch.equal(KMeans.load(p).centroids, km.centroids)
    with pytest.raises(KMeansError, match="at least k=10"):
        KMeans.fit(torch.randn(5, 3), 10)
    with pytest.raises(KMeansError, match="nope.safetensors"):
        KMeans.load(tmp_path / "nope.safetensors")
    with pytest.raises(KMeansError, match=r"\[N, 3\]"):
        km.assign(torch.randn(4, 2))


def test_convert_sklearn_matches_predict(tmp_path):
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(0)
    train = rng.normal(size=(3000, 24)).astype(np.float32)
    test = rng.normal(size=(5000, 24)).astype(np.float32)
    # as fairseq's examples/hubert/simple_kmeans/learn_kmeans.py builds and saves it
    skm = MiniBatchKMeans(
        n_clusters=50,
        init="k-means++",
        max_iter=100,
        batch_size=1000,
        tol=0.0,
        max_no_improvement=100,
        n_init=20,
        reassignment_ratio=0.0,
        random_state=0,
    )
    skm.fit(train)
    path = tmp_path / "km.bin"
    joblib.dump(skm, path)
    out = tmp_path / "c.safetensors"
    assert main(["convert-kmeans", str(path), "--out", str(out)]) == 0
    km = KMeans.load(out)
    ours = km.assign(torch.from_numpy(test)).numpy()
    assert np.array_equal(ours, skm.predict(test))
    with pytest.raises(KMeansError, match="not a fitted k-means"):
        joblib.dump({"a": 1}, tmp_path / "bad.bin")
        convert_sklearn(tmp_path / "bad.bin")
