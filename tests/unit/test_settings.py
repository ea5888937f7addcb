"""Settings come from LASTMILE_* variables, typed, and go back to the same variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import PREFIX, Settings, describe


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port_of("dispatch") == settings.dispatch_port == 50053
    assert settings.graph_path == settings.graph_dir / "malta.osrm"


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "LASTMILE_GATEWAY_PORT": "6001",
            "LASTMILE_S3_SECURE": "yes",
            "LASTMILE_SHUTDOWN_GRACE_S": "2.5",
            "LASTMILE_DATA_DIR": "/srv/lastmile",
            "LASTMILE_OSM_PBF": "/maps/berlin.osm.pbf",
            "LASTMILE_TOKEN_SECRET": "s3cr3t",
            "UNRELATED": "ignored",
        }
    )
    assert settings.gateway_port == 6001
    assert settings.s3_secure is True
    assert settings.shutdown_grace_s == 2.5
    assert settings.data_dir == Path("/srv/lastmile")
    assert settings.graph_path == settings.graph_dir / "berlin.osrm"
    assert settings.token_secret == "s3cr3t"
    assert settings.tracking_port == Settings().tracking_port


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("False", False), ("no", False)],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"LASTMILE_S3_SECURE": raw}).s3_secure is expected


@pytest.mark.parametrize(
    ("variable", "raw", "kind"),
    [
        ("LASTMILE_GATEWAY_PORT", "http", "int"),
        ("LASTMILE_DB_POOL_MAX", "2.5", "int"),
        ("LASTMILE_SHUTDOWN_GRACE_S", "soon", "float"),
        ("LASTMILE_S3_SECURE", "maybe", "bool"),
    ],
)
def test_bad_values_name_the_variable(variable: str, raw: str, kind: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_env({variable: raw})
    assert str(caught.value) == f"{variable}={raw!r} is not a valid {kind}"


def test_to_env_round_trips() -> None:
    changed = Settings().replace(
        gateway_port=7001,
        s3_secure=True,
        shutdown_grace_s=0.25,
        data_dir=Path("/tmp/x"),
        database_url="postgresql://u:p@127.0.0.1:1/db",
    )
    for settings in (Settings(), changed):
        env = settings.to_env()
        assert all(key.startswith(PREFIX) for key in env)
        assert all(isinstance(value, str) for value in env.values())
        assert Settings.from_env(env) == settings
    assert changed.to_env()["LASTMILE_S3_SECURE"] == "true"


def test_replace_returns_a_copy_and_settings_are_frozen() -> None:
    original = Settings()
    changed = original.replace(pod_port=1234)
    assert (original.pod_port, changed.pod_port) == (50054, 1234)
    with pytest.raises(AttributeError):
        original.pod_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        original.replace(no_such_setting=1)


def test_every_setting_is_described() -> None:
    rows = describe()
    assert [variable for variable, _, _ in rows] == list(Settings().to_env())
    assert all(doc for _, _, doc in rows)
    assert ("LASTMILE_GATEWAY_PORT", "50051", "gRPC port of the driver gateway.") in rows
