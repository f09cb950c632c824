"""Settings of ``tokunify serve``: the CLI dataclass and the request limits and access rules it carries."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

API_KEY_ENV = "TOKUNIFY_API_KEY"
"""Where ``tokunify serve`` reads the API key when ``--api-key`` is not given."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond gets a 4xx naming the field."""

    max_upload_bytes: int = 25 * 1024 * 1024
    """Largest request body (an upload or a JSON body); larger bodies get 413."""
    max_input_chars: int = 4096
    """Longest text input (speech `input`, a chat message's text)."""
    max_audio_seconds: float = 120.0
    """Longest audio input."""
    max_audio_channels: int = 8
    """Most channels in an audio input."""
    max_audio_rate: int = 192_000
    """Highest sample rate of an audio input."""
    max_new_tokens: int = 2048
    """Largest `max_new_tokens` a request may set."""


@dataclass(frozen=True)
class Capacity:
    """How much work the server takes on at once; beyond it a request gets 429 at once."""

    max_queue: int = 64
    """Requests admitted at once (waiting for or in a batch, or streaming)."""
    max_streams: int = 4
    """Streamed syntheses at once (each runs its own generate); they count in max_queue too."""
    threads: int = 2
    """Worker threads for CPU work beside the decode thread (audio decoding, prompts, encoding)."""


@dataclass(frozen=True)
class Access:
    """Who may call the server: an API key on /v1/*, the Host names and the browser origins."""

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = None
    """Host names accepted besides loopback ones (``*.example.com`` matches subdomains); None: any."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed cross-origin (``*``: any)."""


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.y.z`` or ``::1`` (brackets allowed)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class ServeArgs:
    """Serve a bundle over HTTP: OpenAI's audio + chat endpoints and a browser page at /."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 for every interface: set --api-key)."""
    port: int = 8000
    """TCP port."""
    device: str = "cpu"
    """Device of the model and the vocoder (cpu, cuda, cuda:1, mps)."""
    batching: bool = True
    """Collect concurrent requests and decode them in one batched generate (off: one at a time)."""
    max_batch: int = 16
    """Most requests in one batch."""
    batch_wait_ms: float = 5.0
    """How long the first request of a batch waits for others to join."""
    max_queue: int | None = None
    """Requests admitted at once, streams included; more get 429 (default: 4 x --max-batch)."""
    max_streams: int = 4
    """Streamed syntheses at once (each runs its own generate); more get 429."""
    threads: int | None = None
    """Worker threads for audio decoding, prompts and encoding (default: the cores this process may use)."""
    max_upload_mb: float = 25.0
    """Largest request body in MiB (larger: 413)."""
    max_input_chars: int = 4096
    """Longest text input in characters."""
    max_audio_seconds: float = 120.0
    """Longest audio input in seconds (checked from the file's header before decoding)."""
    max_audio_channels: int = 8
    """Most channels in an audio input."""
    max_new_tokens: int = 2048
    """Largest max_new_tokens a request may ask for."""
    api_key: str | None = None
    """Require `Authorization: Bearer KEY` on /v1/* (default: $TOKUNIFY_API_KEY; none: no key)."""
    allowed_hosts: list[str] = field(default_factory=list)
    """Host names accepted in the Host header besides loopback ones (on a loopback bind only loopback names pass)."""
    cors_origin: list[str] = field(default_factory=list)
    """Browser origins (https://app.example.com) allowed to call /v1/* cross-origin (default: none)."""
    drain_seconds: float = 10.0
    """On SIGTERM: how long in-flight requests may finish before they are cancelled."""
    workers: int = 1
    """Server processes on this host and port (uvicorn workers), each with its own model copy."""
    model_name: str | None = None
    """Model id reported by /v1/models and accepted in `model` (default: the bundle directory name)."""

    def limits(self) -> Limits:
        return Limits(
            max_upload_bytes=int(self.max_upload_mb * 1024 * 1024),
            max_input_chars=self.max_input_chars,
            max_audio_seconds=self.max_audio_seconds,
            max_audio_channels=self.max_audio_channels,
            max_new_tokens=self.max_new_tokens,
        )

    def capacity(self) -> Capacity:
        """The admission limits; ValueError naming the option when one is out of range."""
        if self.max_batch < 1 or self.batch_wait_ms < 0:
            raise ValueError(f"--max-batch must be >= 1 and --batch-wait-ms >= 0, got {self.max_batch}, {self.batch_wait_ms}")  # fmt: skip
        cap = Capacity(
            max_queue=self.max_queue if self.max_queue is not None else 4 * self.max_batch,
            max_streams=self.max_streams,
            threads=self.threads if self.threads is not None else default_threads(),
        )
        for name, value in (("--max-queue", cap.max_queue), ("--max-streams", cap.max_streams), ("--threads", cap.threads)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        return cap

    def key(self) -> str | None:
        """``--api-key``, else ``$TOKUNIFY_API_KEY``, else None (no key required)."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def access(self) -> Access:
        """On a loopback bind only loopback Host names (plus --allowed-hosts) pass; elsewhere any,
        unless --allowed-hosts names them."""
        extra = tuple(h.lower() for h in self.allowed_hosts)
        hosts = extra if is_loopback(self.host) or extra else None
        return Access(self.key(), hosts, tuple(o.rstrip("/") for o in self.cors_origin))
