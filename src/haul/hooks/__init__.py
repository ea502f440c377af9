"""Hooks: what happens to uploads, told to the application (HTTP or a command), durably for
the post-* events (an outbox in the record store, a worker delivering it) and synchronously
for the blocking pre-* ones (a gate in front of the core's steps)."""
