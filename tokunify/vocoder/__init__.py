"""Unit vocoders: CodeHiFiGAN (units -> waveform), inference and streaming. Never imports train/."""

from tokunify.vocoder.codehifigan import (
    CodeHiFiGAN,
    CodeHiFiGANConfig,
    VocoderError,
    load_codehifigan,
    save_codehifigan,
)
from tokunify.vocoder.inference import UnitVocoder

__all__ = [
    "CodeHiFiGAN",
    "CodeHiFiGANConfig",
    "UnitVocoder",
    "VocoderError",
    "load_codehifigan",
    "save_codehifigan",
]
