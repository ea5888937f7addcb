"""The real servers of the local stack (PostgreSQL, Redis, SeaweedFS S3, Envoy), as processes.

Each server class owns one child process on loopback ports in its own directory, so several
stacks (the dev stack, a test session) can run side by side on one machine.
"""

from ops.servers.envoy import EnvoyServer, render_envoy_config, validate_config
from ops.servers.postgres import PostgresServer
from ops.servers.process import ManagedProcess, ServerError, free_port, venv_bin
from ops.servers.redis import RedisServer
from ops.servers.s3 import SeaweedS3

__all__ = [
    "EnvoyServer",
    "ManagedProcess",
    "PostgresServer",
    "RedisServer",
    "SeaweedS3",
    "ServerError",
    "free_port",
    "render_envoy_config",
    "validate_config",
    "venv_bin",
]
