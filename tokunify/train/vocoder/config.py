"""`tokunify train-vocoder` settings (one dataclass for every architecture)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class VocoderTrainConfig:
    """Train a unit HiFi-GAN on a token store (units + durations + the source audio)."""

    store: str = field(metadata={"positional": True})
    """Token store whose records point at their audio."""
    out: str
    """Run directory: checkpoints/, vocoder/ (config.json + generator.safetensors), log.jsonl."""
    stream: str = "units"
    """Unit stream to vocode."""
    arch: Literal["codehifigan", "unit2mel"] = "codehifigan"  # the keys of ARCHS
    """codehifigan: the unit HiFi-GAN (GPU quality path); unit2mel: a conv net regressing log-mel,
    vocoded by Griffin-Lim, that learns in CPU minutes (``preset``/``adversarial``/``mel_weight``
    do not apply to it)."""
    dilations: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    """unit2mel: one residual conv layer (kernel 5) per entry, with that dilation."""
    preset: Literal["tiny-cpu", "v1"] = "tiny-cpu"
    """CodeHiFiGAN size: tiny-cpu (demo, CPU minutes) or v1 (the published recipe, GPU days)."""
    steps: int = 2000
    """Optimizer steps."""
    max_minutes: float = 0.0
    """Stop early after this many minutes (0: no limit); the final step is checkpointed."""
    batch_size: int = 8
    """Segments per step."""
    segment_frames: int = 32
    """Unit frames per training segment."""
    lr: float = 2e-4
    """AdamW learning rate (generator and discriminators)."""
    adversarial: bool = True
    """Use the discriminators (off: mel + duration losses only)."""
    mel_weight: float = 45.0
    """Weight of the mel L1 loss."""
    max_utterances: int = 0
    """Load at most this many utterances of the store (0: all; the audio is held in memory)."""
    speaker: str | None = None
    """Train on this speaker's utterances only (the store's speaker column): a single-voice
    vocoder, which speaks every input in that voice."""
    multispkr: bool = False
    """Condition on a speaker embedding (speaker ids from the store's speaker column)."""
    save_every: int = 500
    """Steps between checkpoints."""
    log_every: int = 50
    """Steps between log lines."""
    seed: int = 0
    """Seed."""
    cpu: bool = False
    """Force CPU."""
    resume: bool = True
    """Resume from the newest checkpoint in out (a non-empty out without one is refused)."""
    overwrite: bool = False
    """Delete an earlier run in out (checkpoints/, vocoder/, log.jsonl) and start afresh."""
