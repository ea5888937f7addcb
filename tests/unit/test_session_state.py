"""The platform keeps no PostgreSQL session state, so pooled connections need no reset query
(core.db.keep_session): no session-level advisory lock, LISTEN, SET or set_config."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "gateway", "dispatch", "tracking", "pod", "ops", "bench")
SESSION_STATE = [
    # Session-level advisory locks (the _xact_ ones end with their transaction).
    re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\(", re.IGNORECASE),
    # Statements opening with the keyword (SQL is written upper case here; docstrings are not).
    re.compile(r"[\"']\s*LISTEN\s|add_listener\("),
    re.compile(r"[\"']\s*(RESET|SET)\s+(?!LOCAL\b)"),
    re.compile(r"set_config\([^)]*false", re.IGNORECASE),
]


def _offences(text: str) -> list[str]:
    return [m.group(0) for pattern in SESSION_STATE for m in pattern.finditer(text)]


def test_no_code_leaves_state_on_a_pooled_session() -> None:
    found = {
        str(path.relative_to(ROOT)): hits
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.suffix in {".py", ".sql"} and (hits := _offences(path.read_text()))
    }
    assert found == {}


def test_the_guard_sees_session_state() -> None:
    assert _offences('await conn.execute("SET statement_timeout = 0")')
    assert _offences("SELECT pg_advisory_lock(42)")
    assert _offences("await conn.add_listener('orders', callback)")
    assert _offences('await conn.execute("LISTEN orders")')
    assert _offences("SELECT set_config('app.tenant', $1, false)")
    assert not _offences('await conn.execute("SET LOCAL statement_timeout = 0")')
    assert not _offences("SELECT pg_advisory_xact_lock(42)")
    assert not _offences('"UPDATE orders SET status = $2 WHERE order_id = $1"')
    assert not _offences('"""Set every origin of the tenant to its area."""')
