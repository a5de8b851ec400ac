"""The pure core: desired-state models, validation, rendering and planning. No I/O here."""
