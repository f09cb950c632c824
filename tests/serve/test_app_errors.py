"""A 5xx says what, not how: a generic message and a request id; the log has the traceback."""

from __future__ import annotations

import logging

import httpx
import numpy as np

from tokunify.serve.engine import Engine

SECRET = "secret detail /srv/models/weights.bin KeyError('layer.7')"


class ExplodingEngine(Engine):
    """An engine whose prompt encoding fails for one input, as a broken bundle part would."""

    async def prompt(
        self, task: str, source: str | np.ndarray, sr: int | None = None
    ) -> np.ndarray:
        if isinstance(source, str) and "explode" in source:
            raise RuntimeError(SECRET)
        return await super().prompt(task, source, sr)


def test_an_internal_failure_leaks_no_exception_text(serve_with, caplog):
    caplog.set_level(logging.ERROR, logger="tokunify.serve")
    with serve_with(ExplodingEngine) as s:
        r = httpx.post(f"{s.url}/v1/audio/speech", json={"model": "tiny", "input": "please explode", "max_new_tokens": 8}, timeout=60)  # fmt: skip
        assert r.status_code == 500
        body = r.json()["error"]
        rid = body["request_id"]
        assert r.headers["x-request-id"] == rid and body["type"] == "server_error"
        assert (
            body["message"] == f"internal error (request id {rid}); the server log has the details"
        )
        for leak in ("secret", "RuntimeError", "KeyError", "Traceback", "/srv"):
            assert leak not in r.text, leak
        (rec,) = [x for x in caplog.records if rid in x.getMessage()]
        assert rec.exc_info is not None and SECRET in str(rec.exc_info[1])
        assert "POST /v1/audio/speech" in rec.getMessage()
        # the same server still answers, and its admission slot came back
        ok = httpx.post(f"{s.url}/v1/audio/speech", json={"model": "tiny", "input": "the cat", "max_new_tokens": 8}, timeout=60)  # fmt: skip
        assert ok.status_code == 200
        assert httpx.get(f"{s.url}/health").json()["queue"]["in_flight"] == 0
