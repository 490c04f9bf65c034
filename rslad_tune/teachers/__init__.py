"""Teachers: the source adapters (one module each, registered in sources.py), resolved teacher folders and
their cards, the soft-label cache, the shipped zoo."""
