"""Settings.from_env: defaults, every variable, and clear refusals of bad values."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from aion_common.settings import DEFAULT_PAYLOAD_LIMIT, Settings, SettingsError


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic_prefix == "aion"
    assert settings.partitions == 6
    assert settings.replication_factor == 1
    assert settings.payload_limit_bytes == DEFAULT_PAYLOAD_LIMIT
    assert settings.transactions == "auto"
    assert settings.kafka_security == {}


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "AION_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "AION_TOPIC_PREFIX": "team_a.prod-1",
            "AION_PARTITIONS": "12",
            "AION_REPLICATION_FACTOR": "3",
            "AION_DATABASE_URL": "postgresql+asyncpg://db/aion",
            "AION_PAYLOAD_LIMIT_BYTES": "1024",
            "AION_TRANSACTIONS": "off",
            "AION_INSTANCE_ID": "engine-7",
            "AION_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "AION_KAFKA_SASL_MECHANISM": "PLAIN",
            "AION_KAFKA_SASL_USERNAME": "svc",
            "AION_KAFKA_SASL_PASSWORD": "secret",
        }
    )
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topic_prefix == "team_a.prod-1"
    assert settings.partitions == 12
    assert settings.replication_factor == 3
    assert settings.database_url == "postgresql+asyncpg://db/aion"
    assert settings.payload_limit_bytes == 1024
    assert settings.transactions == "off"
    assert settings.instance_id == "engine-7"
    assert settings.kafka_client_options() == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "secret",
    }


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"AION_PARTITIONS": "six"}, "AION_PARTITIONS"),
        ({"AION_PARTITIONS": "0"}, "AION_PARTITIONS"),
        ({"AION_PARTITIONS": "-3"}, "AION_PARTITIONS"),
        ({"AION_REPLICATION_FACTOR": "0"}, "AION_REPLICATION_FACTOR"),
        ({"AION_REPLICATION_FACTOR": "1.5"}, "AION_REPLICATION_FACTOR"),
        ({"AION_PAYLOAD_LIMIT_BYTES": "0"}, "AION_PAYLOAD_LIMIT_BYTES"),
        ({"AION_TRANSACTIONS": "maybe"}, "AION_TRANSACTIONS"),
        ({"AION_TRANSACTIONS": "ON"}, "AION_TRANSACTIONS"),
        ({"AION_TOPIC_PREFIX": "has space"}, "AION_TOPIC_PREFIX"),
        ({"AION_TOPIC_PREFIX": "slash/y"}, "AION_TOPIC_PREFIX"),
        ({"AION_TOPIC_PREFIX": ""}, "AION_TOPIC_PREFIX"),
        ({"AION_KAFKA_BOOTSTRAP": "  "}, "AION_KAFKA_BOOTSTRAP"),
    ],
)
def test_invalid_values_are_refused_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_every_transaction_mode_is_accepted(mode: str) -> None:
    assert Settings.from_env({"AION_TRANSACTIONS": mode}).transactions == mode


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AION_PARTITIONS", "9")
    monkeypatch.setenv("AION_INSTANCE_ID", "from-env")
    settings = Settings.from_env()
    assert settings.partitions == 9
    assert settings.instance_id == "from-env"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.partitions = 3  # type: ignore[misc]


def test_kafka_client_options_turn_tls_files_into_an_ssl_context() -> None:
    from aion_common.kafka.options import client_options

    plain = client_options(Settings.from_env({"AION_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}))
    assert plain == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "SASL_PLAINTEXT"}
    ca = Path(ssl.get_default_verify_paths().openssl_cafile)
    if not ca.is_file():
        pytest.skip(f"no system CA bundle at {ca} to stand in for a CA file")
    # aiokafka takes no ssl_cafile: the CA file must arrive as an ssl_context.
    options = client_options(
        Settings.from_env({"AION_KAFKA_SECURITY_PROTOCOL": "SSL", "AION_KAFKA_SSL_CAFILE": str(ca)})
    )
    assert "ssl_cafile" not in options
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["security_protocol"] == "SSL"


def test_min_insync_replicas_defaults_to_two_at_most_and_is_checked() -> None:
    assert Settings().topic_min_insync_replicas == 1
    assert Settings(replication_factor=2).topic_min_insync_replicas == 2
    assert Settings(replication_factor=3).topic_min_insync_replicas == 2
    env = {"AION_REPLICATION_FACTOR": "5", "AION_MIN_INSYNC_REPLICAS": "3"}
    assert Settings.from_env(env).topic_min_insync_replicas == 3
    with pytest.raises(SettingsError, match="AION_MIN_INSYNC_REPLICAS=4: must be between 1 and"):
        Settings.from_env({"AION_REPLICATION_FACTOR": "3", "AION_MIN_INSYNC_REPLICAS": "4"})
    with pytest.raises(SettingsError, match="AION_MIN_INSYNC_REPLICAS='two'"):
        Settings.from_env({"AION_MIN_INSYNC_REPLICAS": "two"})
