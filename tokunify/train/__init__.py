"""Training on the token store (accelerate). Imports the core; the core never imports it."""
