"""Offline corpora: espeak-ng synthesis and a sentence grammar."""
