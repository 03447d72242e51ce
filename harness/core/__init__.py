"""Core: configuration, typed parameters, registries, errors, results layout, provenance, seeding."""
