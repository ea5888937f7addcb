"""Dispatch: orders and their state machine, provider rules, matching, planning, origins,
integrations."""
