"""The public contract: one module per topic (its message types and its channel), the shared value types in `base`,
and the catalogue of every channel in `topics`."""
