"""tokunify: discrete-token unified speech-text language models.

Data flows one way::

    audio/text -> tokenizers -> unified token sequences (vocab + formats) -> token store
              -> train -> self-describing bundle -> generate -> vocoder -> audio
"""

__version__ = "0.1.0"

from tokunify.bundle import Bundle, BundleSpec, load
from tokunify.vocab import StreamSpec, UnifiedVocab

__all__ = ["Bundle", "BundleSpec", "StreamSpec", "UnifiedVocab", "__version__", "load"]
