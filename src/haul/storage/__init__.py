"""Where the bytes live: one module per backend behind :class:`haul.core.interfaces.Storage`."""
