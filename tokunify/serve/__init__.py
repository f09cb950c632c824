"""``tokunify serve``: an OpenAI-compatible speech server (FastAPI + uvicorn) with a browser page.

``pip install tokunify[serve]``. Requests are collected for a few milliseconds and decoded in one
batched ``generate`` (:mod:`tokunify.serve.batcher`); the HTTP layer lives in
:mod:`tokunify.serve.app`, the bridge to :class:`~tokunify.generate.generator.Generator` in
:mod:`tokunify.serve.engine`, the bound on work in progress (429 beyond it) in
:mod:`tokunify.serve.admission`.
"""
