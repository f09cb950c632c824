"""Tokenize engines: manifests -> speech and text tokenizers -> a token store (one process, many
processes or SLURM tasks through the store job, or Ray), and the store's own commands."""
