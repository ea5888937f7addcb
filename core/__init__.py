"""Shared kernel of the platform: settings, storage access, bus, roads, auth, metrics, runtime.

Every service imports from here; no service imports another service's internals.
"""
