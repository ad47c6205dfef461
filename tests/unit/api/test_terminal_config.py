"""[terminal_listener] parsing and the composition root's build_terminal_app."""

from __future__ import annotations

import pytest
from falcon import testing

from jukics.api.identity import PeerIdentity
from jukics.config import ConfigError, parse_config
from jukics.service import Service, build_terminal_app
from jukics.store import db

T1 = "term-01.lab.jukics.example"


def base(tmp_path, **terminal) -> dict:
    section = {"listen": "127.0.0.1:8445", "cert_file": "/x/t.crt", "key_file": "/x/t.key",
               "client_ca_file": "/x/ca.crt", "allowed_terminals": [T1], "purposes": {"F5-counter": "窓口"}}
    section.update(terminal)
    return {"cs": {"municipality_code": "142140", "environment": "development"},
            "database": {"url": f"sqlite:///{tmp_path}/j.db"},
            "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
            "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x/cs.crt", "key_file": "/x/cs.key",
                       "client_ca_file": "/x/ca.crt", "allowed_clients": ["kizon"]},
            "terminal_listener": section}


def test_defaults(tmp_path):
    t = parse_config(base(tmp_path)).terminal_listener
    assert t is not None and t.allowed_terminals == (T1,) and t.search_rule == "name_plus"
    assert (t.session_idle_minutes, t.session_absolute_minutes, t.result_cap, t.workers) == (15, 480, 50, 1)


@pytest.mark.parametrize("change, problem", [
    ({"allowed_terminals": []}, "allowed_terminals"),
    ({"purposes": {}}, "purposes"),
    ({"purposes": {"bad code!": "x"}}, "purposes"),
    ({"search_rule": "anything"}, "search_rule"),
    ({"result_cap": 0}, "result_cap"),
    ({"session_idle_minutes": 600, "session_absolute_minutes": 60}, "session_idle_minutes"),
    ({"listen": "127.0.0.1:8443"}, "another port"),
    ({"wildcards": True}, "unknown keys"),
])
def test_refused(tmp_path, change, problem):
    with pytest.raises(ConfigError) as err:
        parse_config(base(tmp_path, **change))
    assert problem in str(err.value)


def test_absent_section_means_no_listener(tmp_path):
    data = base(tmp_path)
    del data["terminal_listener"]
    assert parse_config(data).terminal_listener is None


@pytest.mark.parametrize("mode, expected", [("name_plus", "strict"), ("two_of_four", "two_of_four")])
def test_build_terminal_app(tmp_path, mode, expected):
    config = parse_config(base(tmp_path, search_rule=mode))
    svc = Service(config)
    db.upgrade(svc.engine)
    app = build_terminal_app(config, identity=lambda env: PeerIdentity((T1,), None), service=svc)
    assert svc.query_router.search_rule == expected
    r = testing.TestClient(app).simulate_get("/v1/search-notice")
    assert r.status_code == 200 and r.json["purposes"] == [{"code": "F5-counter", "description": "窓口"}]
    svc.engine.dispose()


def test_exports_route_only_with_a_media_dir(tmp_path):
    import pyrage

    data = base(tmp_path)
    key = str(pyrage.x25519.Identity.generate().to_public())
    for media_dir, routed in ((None, False), (str(tmp_path), True)):
        data["exports"] = {"recipients": {"kenchou": key}} | ({"media_dir": media_dir} if media_dir else {})
        config = parse_config(data)
        assert config.export_media_dir == (tmp_path if media_dir else None)
        svc = Service(config)
        db.upgrade(svc.engine)
        app = build_terminal_app(config, identity=lambda env: PeerIdentity((T1,), None), service=svc)
        r = testing.TestClient(app).simulate_get("/v1/exports")
        # routed: refused for want of a session; not routed: 404
        assert r.json["error"]["code"] == ("E_SESSION_REQUIRED" if routed else "E_NOT_FOUND")
        svc.engine.dispose()
    data["exports"] = {"media_dir": "relative/dir"}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "exports.media_dir" in str(err.value)
