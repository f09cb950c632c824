"""Unit vocoders: CodeHiFiGAN (units -> waveform) and the CPU unit->mel+Griffin-Lim model, inference
and streaming. Never imports train/."""

from tokunify.vocoder.codehifigan import (
    CodeHiFiGAN,
    CodeHiFiGANConfig,
    VocoderError,
    load_codehifigan,
    save_codehifigan,
)
from tokunify.vocoder.inference import UnitVocoder, load_vocoder
from tokunify.vocoder.unitmel import UnitMel, UnitMelConfig, load_unitmel, save_unitmel

__all__ = [
    "CodeHiFiGAN",
    "CodeHiFiGANConfig",
    "UnitMel",
    "UnitMelConfig",
    "UnitVocoder",
    "VocoderError",
    "load_codehifigan",
    "load_unitmel",
    "load_vocoder",
    "save_codehifigan",
    "save_unitmel",
]
