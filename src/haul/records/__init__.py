"""Where upload records live: one module per backend behind
:class:`haul.core.interfaces.MetadataStore`, and the SQL the relational ones share."""
