"""One exclusive lock per upload across processes and nodes: one module per backend behind
:class:`haul.core.interfaces.Locker`."""
