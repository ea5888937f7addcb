"""Migration files are found in version order and misnamed, missing or doubled ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.db import MIGRATIONS_DIR, load_migrations


def _write(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text(f"-- {name}\nSELECT 1;\n")


def test_the_project_migrations_load_in_order() -> None:
    migrations = load_migrations(MIGRATIONS_DIR)
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "initial"
    assert "CREATE TABLE orders" in migrations[0].sql


def test_files_are_loaded_in_version_order_with_their_sql(tmp_path: Path) -> None:
    _write(tmp_path, "0003_third.sql", "0001_first.sql", "0002_second_step.sql")
    (tmp_path / "README.md").write_text("not a migration")
    migrations = load_migrations(tmp_path)
    assert [(m.version, m.name) for m in migrations] == [
        (1, "first"),
        (2, "second_step"),
        (3, "third"),
    ]
    assert migrations[1].sql == "-- 0002_second_step.sql\nSELECT 1;\n"


def test_an_empty_directory_has_no_migrations(tmp_path: Path) -> None:
    assert load_migrations(tmp_path) == []


@pytest.mark.parametrize(
    "name",
    ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0001_.sql", "00001_long.sql", "abcd_x.sql"],
)
def test_a_misnamed_file_is_refused(tmp_path: Path, name: str) -> None:
    _write(tmp_path, "0001_first.sql", name)
    with pytest.raises(ValueError, match=r"is not named NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_a_gap_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "0003_third.sql")
    with pytest.raises(ValueError, match="migration 0003 found where 0002 was due"):
        load_migrations(tmp_path)


def test_a_duplicate_version_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "0001_again.sql", "0002_second.sql")
    with pytest.raises(ValueError, match="migration 0001 found where 0002 was due"):
        load_migrations(tmp_path)


def test_numbering_must_start_at_one(tmp_path: Path) -> None:
    _write(tmp_path, "0002_second.sql")
    with pytest.raises(ValueError, match="migration 0002 found where 0001 was due"):
        load_migrations(tmp_path)
