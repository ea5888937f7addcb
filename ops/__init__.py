"""Operating the platform locally: starting the real servers and building the road graph."""
