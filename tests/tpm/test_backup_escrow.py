"""The fresh-host case on real software TPMs: a backup made on TPM A restores on a host with a new
TPM B with only the escrow identity; B then holds the secret sealed by B (A's blob never opens on B)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyrage
import pytest

from jukics.backup import archive as bk
from jukics.cli.main import main as cli_main
from jukics.config import load_config
from jukics.keystore.tpm import TpmKeyStore
from jukics.service import Service

MUNICIPALITY = "142140"
CLIENT = "kizon.lab.jukics.example"
TODAY = dt.date(2026, 11, 1)


def _config(root: Path, tcti: str, escrow: str) -> Path:
    cfg = root / "jukics.toml"
    cfg.write_text(f"""
[cs]
municipality_code = "{MUNICIPALITY}"
environment = "development"
[database]
url = "sqlite:///{root}/jukics.db"
[keystore]
backend = "tpm"
tcti = "{tcti}"
state_dir = "{root}/keystore"
[intake]
listen = "127.0.0.1:18443"
cert_file = "/x"
key_file = "/x"
client_ca_file = "/x"
allowed_clients = ["{CLIENT}"]
[backup]
dir = "{root}/backups"
escrow_recipient = "{escrow}"
""")
    return cfg


def _host(root: Path, tcti: str, escrow: str) -> Path:
    root.mkdir()
    cfg = _config(root, tcti, escrow)
    TpmKeyStore(tcti, root / "keystore").provision()  # what `jukics keystore provision` does in site.yml
    assert cli_main(["--config", str(cfg), "db", "upgrade"]) == 0
    assert cli_main(["--config", str(cfg), "backup", "provision"]) == 0
    return cfg


def test_escrow_restore_onto_a_new_tpm(swtpm_factory, tmp_path, capsys):
    from jukics.sim.residents import generate_residents, resident_intake_items

    tpm_a, tpm_b = swtpm_factory(), swtpm_factory()
    escrow = pyrage.x25519.Identity.generate()
    escrow_file = tmp_path / "escrow.key"
    escrow_file.write_text(f"{escrow}\n")
    cfg_a = _host(tmp_path / "a", tpm_a.tcti, str(escrow.to_public()))
    config_a = load_config(cfg_a)
    svc = Service(config_a)
    svc.intake.today = lambda: TODAY
    people = list(generate_residents(5, seed=9, municipality_code=MUNICIPALITY, today=TODAY))
    assert svc.intake.submit([i for p in people for i in resident_intake_items(p)], client=CLIENT)["applied"] > 0
    records = {p["juminhyo_code"]: svc.store.get_current(p["juminhyo_code"]) for p in people}
    svc.engine.dispose()
    res = bk.create_backup(config_a.database_url, MUNICIPALITY, bk.BackupSettings.from_config(config_a.raw),
                           svc.keystore)

    cfg_b = _host(tmp_path / "b", tpm_b.tcti, str(escrow.to_public()))
    config_b = load_config(cfg_b)
    shutil.copy(res.path, tmp_path / "b" / "backups" / res.path.name)
    # A's sealed blob does not open on B: the appliance route is closed, clearly
    shutil.copy(tmp_path / "a" / "keystore" / "secret.sealed", tmp_path / "a-secret.sealed")
    capsys.readouterr()
    assert cli_main(["--config", str(cfg_b), "backup", "restore"]) == 1
    assert "E_BACKUP_WRONG_KEY" in capsys.readouterr().err
    assert cli_main(["--config", str(cfg_b), "backup", "restore", "--escrow-identity", str(escrow_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["keystore"] == "replaced" and Path(report["replaced_blob_kept_as"]).is_file()
    fresh = TpmKeyStore(tpm_b.tcti, tmp_path / "b" / "keystore")  # a new process: unseals from TPM B
    assert fresh.data_key() == svc.keystore.data_key()
    assert (tmp_path / "b" / "keystore" / "secret.sealed").read_bytes() != (tmp_path / "a-secret.sealed").read_bytes()
    store_b = Service(config_b).store
    for code, record in records.items():
        assert store_b.get_current(code) == record
    assert cli_main(["--config", str(cfg_b), "audit", "verify"]) == 0
    # the blob sealed by B is B's alone: TPM A cannot open it
    shutil.copy(tmp_path / "b" / "keystore" / "secret.sealed", tmp_path / "a" / "keystore" / "secret.sealed")
    with pytest.raises(Exception, match="E_KEYSTORE"):
        TpmKeyStore(tpm_a.tcti, tmp_path / "a" / "keystore").data_key()
