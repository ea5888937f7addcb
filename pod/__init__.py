"""Proof of delivery: pre-signed uploads, validation, tamper-evident records."""
