"""Vehicle routing: the problem model, one solver interface and its backends, the feasibility
checker, benchmark file formats and route re-optimization."""
