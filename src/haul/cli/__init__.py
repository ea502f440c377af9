"""The ``haul`` command line: a thin layer over the composition root (serve, gc) and over the
client library (upload, download, status, rm, ls)."""
