"""tokunify: discrete-token unified speech-text language models.

Data flows one way, and the packages are its layers (each imports only its own layer and lower ones)::

    core -> data -> tasks | tokenizers -> model | tokenize -> vocoder -> train | generate
         -> eval -> chat -> synth | serve -> demos -> cli

    audio/text -> tokenizers -> unified token sequences (vocab + tasks) -> token store
              -> train -> self-describing bundle -> generate -> vocoder -> audio

``tokunify.load(DIR)`` returns a checked :class:`Bundle`; a bundle with a speech input (encoder +
adapter in ``DIR/speech_input/``) comes with it composed as ``Bundle.speech_input``.
"""

from tokunify.core import __version__, compat
from tokunify.core.vocab import StreamSpec, UnifiedVocab
from tokunify.model.bundle import Bundle, BundleSpec, load

compat.install()

__all__ = ["Bundle", "BundleSpec", "StreamSpec", "UnifiedVocab", "__version__", "load"]
