from pathlib import Path

import pytest

from jukics.config import ConfigError, load_config, parse_config

GOOD = {
    "cs": {"municipality_code": "131016", "environment": "lab"},
    "database": {"url": "sqlite:////tmp/x.db"},
    "keystore": {"backend": "dev", "dev_secret_file": "/tmp/secret"},
    "intake": {
        "listen": "0.0.0.0:8443",
        "cert_file": "/etc/jukics/tls/cs.crt",
        "key_file": "/etc/jukics/tls/cs.key",
        "client_ca_file": "/etc/jukics/tls/ca.crt",
        "allowed_clients": ["kizon.lab.jukics.example"],
    },
}


def with_(section: str, **values):
    data = {k: dict(v) for k, v in GOOD.items()}
    data.setdefault(section, {}).update(values)
    return data


def test_good_config_parses_with_defaults():
    cfg = parse_config(GOOD)
    assert cfg.municipality_code == "131016"
    assert cfg.sender_id == "cs-131016"
    assert cfg.intake.listen.port == 8443
    assert cfg.workers == 2
    assert cfg.metrics_listen.address == "127.0.0.1:9464"


@pytest.mark.parametrize(
    ("section", "values", "fragment"),
    [
        ("cs", {"municipality_code": "131017"}, "cs.municipality_code"),  # wrong check digit
        ("cs", {"municipality_code": 131016}, "must be str"),
        ("cs", {"environment": "staging"}, "cs.environment"),
        ("intake", {"listen": "0.0.0.0:70000"}, "intake.listen"),
        ("intake", {"listen": "example.org:443"}, "intake.listen"),
        ("intake", {"allowed_clients": []}, "intake.allowed_clients"),
        ("server", {"workers": True}, "server.workers"),
        ("database", {"url": "mysql://x"}, "database.url"),
        ("keystore", {"backend": "plainfile"}, "keystore.backend"),
    ],
)
def test_bad_values_are_named(section, values, fragment):
    with pytest.raises(ConfigError) as exc:
        parse_config(with_(section, **values))
    assert exc.value.code == "E_CONFIG"
    assert any(fragment in p for p in exc.value.problems), exc.value.problems


def test_dev_keystore_refused_in_production():
    with pytest.raises(ConfigError) as exc:
        parse_config(with_("cs", environment="production"))
    assert any("refused in production" in p for p in exc.value.problems)


def test_all_problems_reported_at_once():
    data = with_("cs", municipality_code="1", environment="nope")
    data["bogus"] = {}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert len(exc.value.problems) >= 3


def test_load_config_reports_toml_errors(tmp_path: Path):
    p = tmp_path / "bad.toml"
    p.write_text("[cs\nmunicipality_code = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
