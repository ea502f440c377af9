"""Concrete storage backends, metadata stores and lockers behind the core's interfaces."""
