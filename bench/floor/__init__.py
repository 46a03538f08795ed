"""The floor: the same sends as minimal one-file click commands (see bench/README in docs)."""
