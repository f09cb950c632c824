"""`tokunify tokenize`: a manifest -> a token store, through the job and the engine it names."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from tokunify.data.importers import reject_summary
from tokunify.data.store.job import JobOptions, report_store, run_store_job
from tokunify.tokenize.engines import get_engine
from tokunify.tokenize.job import (
    ChunkWorker,
    TokenizeArgs,
    TokenizeError,
    audio_rate,
    build_meta,
    load_rows,
)

__all__ = ["TokenizeArgs", "run_tokenize"]


def run_tokenize(args: TokenizeArgs) -> dict[str, Any]:
    root = Path(args.out)
    rows = load_rows(args.manifest)
    meta = build_meta(args, rows)
    opts = JobOptions(shard=args.shard, workers=args.workers, device=args.device,
                      progress=args.progress, name="tokenize", unit="utt")  # fmt: skip
    executor = get_engine(args.engine).executor(args, meta, rows)
    res = run_store_job(root, meta, rows, partial(ChunkWorker, args, meta), opts,
                        executor=executor, postfix=audio_rate)  # fmt: skip
    totals = res.totals
    summary = {**res.summary(), "hours": totals["seconds"] / 3600}
    launch = res.launch
    who = f"slice {launch.index}/{launch.count} ({launch.launcher}): " if launch.distributed else ""
    print(
        f"{who}tokenized {totals['rows']} utterances ({summary['hours']:.3f} h of audio) into {totals['chunks']} shards, "
        f"{totals['rejects']} rejected (rejects-*.jsonl), in {res.elapsed_s:.1f} s; store {root}"
    )
    if launch.distributed:
        report_store(root, meta, res.complete)
    if totals["rows"] == 0 and (totals["chunks"] > 0 or not rows):
        reasons = [json.loads(x)["reason"] for f in sorted(root.glob("rejects-*.jsonl"))
                   for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]  # fmt: skip
        raise TokenizeError(
            f"{args.manifest}: " + reject_summary(len(rows), reasons, str(root / "rejects-*.jsonl"))
        )
    return summary
