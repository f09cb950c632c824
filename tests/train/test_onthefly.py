"""On-the-fly tokenization: a manifest trains like a store and is cached as one on first read."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import write_config

import tokunify
from tokunify.cli import main
from tokunify.data.store import TokenStore
from tokunify.train.onthefly import manifest_stores


def manifest_with_a_bad_row(speech_manifest: Path, out: Path) -> Path:
    rows = [json.loads(x) for x in speech_manifest.read_text().splitlines()]
    rows = [{**r, "audio": str(speech_manifest.parent / r["audio"])} for r in rows]
    rows.insert(5, {"id": "gone", "audio": str(out.parent / "gone.wav"), "text": "x"})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def streams_by_id(store) -> dict[str, tuple]:
    out = {}
    for i in range(len(store)):
        r = store[i]
        out[r.id] = ({k: v.tolist() for k, v in r.streams.items()},
                     {k: v.tolist() for k, v in r.durations.items()}, r.text)  # fmt: skip
    return out


def test_first_read_tokenizes_and_caches_the_second_reads_the_cache(
    train_bundle, train_store, speech_manifest, tmp_path
):
    manifest = manifest_with_a_bad_row(speech_manifest, tmp_path / "m.jsonl")
    bundle = tokunify.load(train_bundle, with_model=False)

    def open_():
        return manifest_stores([str(manifest)], tmp_path / "cache", "units", bundle, 4, "cpu")[0]

    first = open_()
    assert len(first) == 19 and first.meta.num_chunks == 5
    seen = streams_by_id_in_order(first, first.order(seed=3, epoch=0))
    assert first.tokenized_chunks == 5
    # the rejected row is an empty record that no task can use
    assert "" in seen and seen.pop("")[0] == {}
    # the same ids as `tokunify tokenize` with the bundle's tokenizer
    ref = streams_by_id(TokenStore(train_store))
    assert seen == ref
    cache = TokenStore(first.root)  # the cache is a complete, ordinary store
    assert len(cache) == 18 and cache.rejects == 1
    second = open_()  # a new epoch (or run): every chunk comes from the cache
    assert streams_by_id_in_order(second, second.order(seed=3, epoch=1)) == {
        **seen,
        "": ({}, {}, None),
    }
    assert second.tokenized_chunks == 0


def streams_by_id_in_order(store, order) -> dict[str, tuple]:
    out = {}
    for i in order:
        r = store[int(i)]
        out[r.id] = ({k: v.tolist() for k, v in r.streams.items()},
                     {k: v.tolist() for k, v in r.durations.items()}, r.text)  # fmt: skip
    return out


def test_an_edited_manifest_gets_its_own_cache(train_bundle, speech_manifest, tmp_path):
    """The cache is keyed by the rows' content: an edited manifest at the same path is tokenized
    into a new cache instead of being refused (or served stale tokens) by the old one."""
    manifest = manifest_with_a_bad_row(speech_manifest, tmp_path / "m.jsonl")
    bundle = tokunify.load(train_bundle, with_model=False)

    def open_():
        return manifest_stores([str(manifest)], tmp_path / "cache", "units", bundle, 4, "cpu")[0]

    first = open_()
    first[0]
    rows = manifest.read_text().splitlines()
    edited = json.loads(rows[0])
    edited["text"] = edited["text"] + " again"
    manifest.write_text("\n".join([json.dumps(edited), *rows[1:]]) + "\n")
    second = open_()
    assert second.root != first.root
    assert second[0].text == edited["text"] and second.tokenized_chunks == 1
    assert open_().root == second.root  # the same rows find the same cache


def test_train_on_a_manifest(train_bundle, speech_manifest, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", train_bundle, speech_manifest, run, steps=3,
                       save_every=0, eval_every=0, **{"data.stores": [],
                       "data.manifests": [str(speech_manifest)], "data.manifest_chunk_size": 6})  # fmt: skip
    assert main(["train", str(cfg)]) == 0
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 3
    (cache,) = (run / "token_cache").iterdir()
    s = TokenStore(cache, require_complete=False)
    assert (
        len(s.chunks) >= 1
        and s.meta.streams["units"].hash
        == tokunify.load(train_bundle, with_model=False).spec.speech_tokenizers["units"]["hash"]
    )
