"""Tracking: ingest processing, live state, history, geofences, ETAs, customer and fleet views."""
