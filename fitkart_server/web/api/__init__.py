"""HTTP layer: thin blueprints over the sync engine."""
