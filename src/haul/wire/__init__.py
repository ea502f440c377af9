"""Pure codecs for what goes over the wire: tus headers, digests, checksums, proofs, ranges.
No I/O lives here; the server and the client both use it."""
