"""The bytes on the wire below the ASGI app: guarded HTTP/1.1, HTTP/2, the TLS gate, and the
uvicorn server that runs them. Imports nothing of haul above it."""
