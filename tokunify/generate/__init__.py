"""Generation by task tag, constrained decoding and vocoders. Imports the core; the core never imports it."""
