"""Corpora made with a trained model: synthetic interleaved data (:mod:`~tokunify.synth.interleave`) and
instruction/modal-invariance conversations (:mod:`~tokunify.synth.chat_data`)."""
