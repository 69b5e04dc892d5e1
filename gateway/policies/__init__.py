"""Per-route policies: each module holds its config schema and its handler."""
