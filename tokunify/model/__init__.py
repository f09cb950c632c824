"""The model artifact: a self-describing bundle (vocab + causal LM + speech tokenizers + vocoders) and
:mod:`~tokunify.model.extend`, which makes one from any transformers causal LM."""
