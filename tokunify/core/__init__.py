"""The bottom layer: what every other layer may use and which uses nothing of tokunify above it.

:mod:`~tokunify.core.vocab` (the unified vocabulary; it alone owns id ranges),
:mod:`~tokunify.core.layouts` (codec codebook layouts), :mod:`~tokunify.core.fsio` (atomic writes,
content hashes), :mod:`~tokunify.core.config` (typed configs from YAML and flags),
:mod:`~tokunify.core.textnorm` (the Whisper text normalizer) and :mod:`~tokunify.core.commands`
(the table of CLI subcommands).
"""

__version__ = "0.1.0"
