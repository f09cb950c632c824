"""Speech tokenizers: waveforms in, *local* ids out. They know nothing of the LLM vocabulary."""
