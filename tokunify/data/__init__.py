"""Data in and out: audio I/O, manifests, importers of the layouts people have, the sharded token
store, synthetic corpora (espeak-ng) and span policies for synthetic interleaving. Uses only
:mod:`tokunify.core`."""
