"""Access: the API key on /v1/* (through the official client too), the Host header on a loopback
bind, cross-origin requests, and the start-up warning for an open non-loopback bind."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from tokunify.cli import parse_command
from tokunify.serve.app import create_app
from tokunify.serve.commands import startup_warnings
from tokunify.serve.config import API_KEY_ENV, ServeArgs

KEY = "sk-test-4f1c"
PREFLIGHT = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}  # fmt: skip


@pytest.fixture(scope="module")
def keyed(serve_with):  # type: ignore[no-untyped-def]
    with serve_with(api_key=KEY) as s:
        yield s


def test_v1_needs_the_key_and_the_page_and_health_do_not(keyed, wav_file):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        r = httpx.get(f"{keyed.url}/v1/models", headers=headers)
        err = r.json()["error"]
        assert r.status_code == 401 and err["type"] == "authentication_error", headers
        assert "Authorization: Bearer KEY" in err["message"] and KEY not in err["message"]
    up = httpx.post(f"{keyed.url}/v1/audio/transcriptions", files={"file": ("a.wav", wav_file.read_bytes())}, data={"model": "tiny"})  # fmt: skip
    assert up.status_code == 401
    assert httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200  # fmt: skip
    h = httpx.get(f"{keyed.url}/health")
    assert h.status_code == 200 and h.json()["api_key_required"] is True
    assert httpx.get(f"{keyed.url}/").status_code == 200


def test_the_openai_client_authenticates_with_its_api_key(keyed):
    openai = pytest.importorskip("openai", reason="the openai client is in tokunify's dev extra")
    good = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    assert [m.id for m in good.models.list()] == ["tiny"]
    r = good.audio.speech.create(model="tiny", voice="alloy", input="the cat", response_format="wav", extra_body={"max_new_tokens": 12})  # fmt: skip
    assert r.content[:4] == b"RIFF"
    bad = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="wrong API key"):
        bad.models.list()


def test_the_key_comes_from_the_environment(monkeypatch, voc_bundle):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ServeArgs(str(voc_bundle)).access().api_key == "from-env"
    assert ServeArgs(str(voc_bundle), api_key="flag").access().api_key == "flag"
    monkeypatch.delenv(API_KEY_ENV)
    assert ServeArgs(str(voc_bundle)).access().api_key is None


def test_a_loopback_bind_answers_loopback_host_names_only(server):
    port = server.url.rsplit(":", 1)[1]
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        "127.0.0.2",
        f"[::1]:{port}",
        "localhost",
    ):
        assert httpx.get(f"{server.url}/v1/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::2]:80"):
        r = httpx.get(f"{server.url}/health", headers={"Host": host})
        assert r.status_code == 400, host
        err = r.json()["error"]
        assert err["param"] == "Host" and "is not allowed" in err["message"] and "--allowed-hosts" in err["message"]  # fmt: skip


def test_allowed_hosts_extend_the_loopback_names(server, voc_bundle):
    args = ServeArgs(str(voc_bundle), allowed_hosts=["speech.example.org", "*.lab.example"])
    # no `with`: the client does not run the lifespan, so the shared engine is not started twice
    client = TestClient(create_app(server.engine, args.access()))
    for host, status in (("speech.example.org", 200), ("a.lab.example:8000", 200), ("localhost", 200),
                         ("evil.example", 400)):  # fmt: skip
        assert client.get("/health", headers={"Host": host}).status_code == status, host
    anywhere = ServeArgs(str(voc_bundle), host="0.0.0.0").access()
    assert anywhere.allowed_hosts is None  # a public bind takes any Host unless --allowed-hosts
    assert TestClient(create_app(server.engine, anywhere)).get("/health", headers={"Host": "evil.example"}).status_code == 200  # fmt: skip


def test_cross_origin_requests_are_refused_by_default(server, wav_file):
    pre = httpx.options(f"{server.url}/v1/audio/transcriptions", headers=PREFLIGHT)
    assert pre.status_code == 400 and "access-control-allow-origin" not in pre.headers
    # a simple multipart POST needs no preflight: the Origin (or Sec-Fetch-Site) refuses it
    files = {"file": ("a.wav", wav_file.read_bytes())}
    r = httpx.post(f"{server.url}/v1/audio/transcriptions", files=files, data={"model": "tiny"},
                   headers={"Origin": "http://evil.example"})  # fmt: skip
    assert r.status_code == 403 and "cross-origin request from 'http://evil.example' refused" in r.json()["error"]["message"]  # fmt: skip
    r = httpx.post(f"{server.url}/v1/audio/transcriptions", files=files, data={"model": "tiny"},
                   headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
    assert r.status_code == 403
    # the server's own page (same origin) is not refused
    same = httpx.get(f"{server.url}/v1/models", headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})  # fmt: skip
    assert same.status_code == 200


def test_cors_origin_allows_the_named_origin(server, voc_bundle):
    args = ServeArgs(str(voc_bundle), cors_origin=["http://evil.example"])
    client = TestClient(create_app(server.engine, args.access()), base_url="http://127.0.0.1")
    pre = client.options("/v1/audio/speech", headers=PREFLIGHT)
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://evil.example"  # fmt: skip
    got = client.get("/v1/models", headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})  # fmt: skip
    assert got.status_code == 200 and got.headers["access-control-allow-origin"] == "http://evil.example"  # fmt: skip
    other = client.get("/v1/models", headers={"Origin": "http://other.example"})
    assert other.status_code == 403


def test_an_open_public_bind_warns_at_start_up(voc_bundle, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    (line,) = startup_warnings(ServeArgs(str(voc_bundle), host="0.0.0.0", port=9000))
    assert line.startswith("warning: serving on 0.0.0.0 without an API key") and "--api-key" in line
    assert startup_warnings(ServeArgs(str(voc_bundle), host="0.0.0.0", api_key="k")) == []
    assert startup_warnings(ServeArgs(str(voc_bundle), host="127.0.0.1")) == []


def test_the_cli_takes_the_new_options(voc_bundle):
    _, args = parse_command(["serve", str(voc_bundle), "--max-queue", "6", "--max-streams", "2", "--threads", "3",
                             "--api-key", "k", "--allowed-hosts", "a.example", "b.example",
                             "--cors-origin", "https://app.example", "--drain-seconds", "4"])  # fmt: skip
    assert (args.max_queue, args.max_streams, args.threads, args.drain_seconds) == (6, 2, 3, 4.0)
    assert args.access().allowed_hosts == ("a.example", "b.example")
    assert args.access().cors_origins == ("https://app.example",) and args.key() == "k"
    assert args.capacity().max_queue == 6
    _, default = parse_command(["serve", str(voc_bundle), "--max-batch", "5"])
    assert default.capacity().max_queue == 20 and default.capacity().threads >= 1
