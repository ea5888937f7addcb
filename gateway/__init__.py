"""Driver gateway: the driver apps' bidirectional stream (ingest, acks, commands)."""
