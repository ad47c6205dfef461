"""cs_service's counter-terminal listener as the role renders it (ansible's own templating, the role's
defaults and vars, an inventory's variables): the [terminal_listener] section and the TPM identity
``terminal`` in jukics.toml pass `jukics config check`, the values come from the variables and the
user's win over the defaults, a bad value is refused by that check (the role's `validate:`), and
jukics-terminal.service runs `serve --listener terminal`, binds only its port and is tied to abrmd."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles/cs_service"
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files: {files}
  tasks:
    - ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', '{role}/templates/jukics.toml.j2') }}}}"
        dest: "{out}/jukics.toml"
        mode: "0600"
    - ansible.builtin.copy:
        content: >-
          {{{{ lookup('ansible.builtin.template', '{role}/templates/jukics.service.j2',
                      template_vars={{'cs_service_unit_listener': 'terminal'}}) }}}}
        dest: "{out}/jukics-terminal.service"
        mode: "0600"
"""


def render(tmp_path: Path, inventory: str, extra: dict) -> tuple[dict, str, Path]:
    files = [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")]
    if inventory == "lab":
        files += [str(ROOT / "inventories/lab/group_vars/all.yml"),
                  str(ROOT / "inventories/lab/group_vars/appliance/main.yml")]
    else:
        files += [str(ROOT / "inventories/example/group_vars/appliance/cs_service.yml")]
    # the lab inventory reads the run-time escrow key of scripts/lab-pki.sh from the lab PKI folder
    import pyrage

    (tmp_path / "escrow.pub").write_text(str(pyrage.x25519.Identity.generate().to_public()) + "\n")
    # Extra vars (-e) beat every file, as a user's inventory beats the role's defaults.
    extra = {"role_path": str(ROLE), "ansible_managed": "test", "inventory_dir": str(tmp_path),
             "cs_service_keystore_tcti": "tabrmd:bus_type=system", "jukics_lab_pki_dir": str(tmp_path),
             "ansible_host": "localhost", **extra}
    book = tmp_path / "render.yml"
    book.write_text(PLAYBOOK.format(files=json.dumps(files), role=ROLE, out=tmp_path), encoding="utf-8")
    run = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                          str(book), "-e", json.dumps(extra)], capture_output=True, text=True, check=False,
                         env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1",
                              "HOME": str(tmp_path), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    toml = tmp_path / "jukics.toml"
    return tomllib.loads(toml.read_text(encoding="utf-8")), (tmp_path / "jukics-terminal.service").read_text(), toml


def config_check(toml: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jukics", "--config", str(toml), "config", "check", "--no-files"],
                          capture_output=True, text=True, check=False, env={"PYTHONPATH": str(ROOT / "app")})


@pytest.mark.parametrize("inventory", ["lab", "example"])
def test_the_terminal_listener_and_its_tpm_identity_pass_the_config_check(tmp_path, inventory):
    config, unit, toml = render(tmp_path, inventory, {})
    checked = config_check(toml)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    term = config["terminal_listener"]
    port = term["listen"].rsplit(":", 1)[1]
    assert port == ("8445" if inventory == "lab" else "8444")
    assert term["key_file"] == "/etc/jukics/tls/terminal/current/key.pem"  # the identity's, made in the TPM
    assert term["client_ca_file"] == "/etc/jukics/tls/terminal/trust.pem"
    assert term["allowed_terminals"] and term["purposes"]
    assert (term["session_idle_minutes"], term["session_absolute_minutes"], term["result_cap"],
            term["search_rule"]) == (15, 480, 50, "name_plus")
    ident = config["tls"]["identities"]["terminal"]
    assert ident["role"] == "server" and ident["peer_names"] == term["allowed_terminals"]
    assert "ExecStart=/opt/jukics/venv/bin/jukics --config /etc/jukics/jukics.toml serve --listener terminal" in unit
    assert f"SocketBindAllow=tcp:{port}\n" in unit and "SocketBindDeny=any" in unit
    assert "PartOf=tpm2-abrmd.service" in unit and "Requires=tpm2-abrmd.service" in unit
    assert "include" not in unit and "NoNewPrivileges=yes" in unit


def test_the_users_values_win_and_reach_the_file(tmp_path):
    config, _, toml = render(tmp_path, "lab", {
        "cs_service_terminal_result_cap": 20, "cs_service_terminal_search_rule": "two_of_four",
        "cs_service_terminal_session_idle_minutes": 5, "cs_service_terminal_workers": 2,
        "cs_service_terminal_allowed_terminals": ["term-07.lab.jukics.example"]})
    assert config_check(toml).returncode == 0
    term = config["terminal_listener"]
    got = (term["result_cap"], term["search_rule"], term["session_idle_minutes"], term["workers"])
    assert got == (20, "two_of_four", 5, 2)
    assert config["tls"]["identities"]["terminal"]["peer_names"] == ["term-07.lab.jukics.example"]


@pytest.mark.parametrize(("var", "value", "problem"), [
    ("cs_service_terminal_search_rule", "any", "terminal_listener.search_rule"),
    ("cs_service_terminal_result_cap", 1000, "terminal_listener.result_cap"),
    ("cs_service_terminal_session_idle_minutes", 600, "terminal_listener: session_idle_minutes"),
    ("cs_service_terminal_listen", "0.0.0.0:8444", "terminal_listener.listen"),  # the lab's peer listener port
])
def test_a_bad_value_is_refused_by_the_config_check_before_the_file_is_written(tmp_path, var, value, problem):
    _, _, toml = render(tmp_path, "lab", {var: value})
    checked = config_check(toml)
    assert checked.returncode != 0 and problem in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def test_no_listener_no_section_no_identity(tmp_path):
    config, _, toml = render(tmp_path, "lab", {"cs_service_terminal_enabled": False})
    assert config_check(toml).returncode == 0
    assert "terminal_listener" not in config and "terminal" not in config["tls"]["identities"]
