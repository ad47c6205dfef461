"""The shipped inventories pass the preflight (every role's argument_specs), and a bad value fails it.

The example inventory is what a municipality copies, so it must validate as shipped; the lab
inventory is what `make lab` converges. The preflight runs offline (local connection, no facts).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = ROOT / "playbooks" / "preflight.yml"
# ansible is in the dev venv (requirements/dev.txt), next to this interpreter
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or "ansible-playbook"


def run_preflight(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), "-e", "ansible_connection=local", *extra],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )


def escrow_public_key() -> str:
    import pyrage

    return str(pyrage.x25519.Identity.generate().to_public())


def assert_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # both plays ran: the appliance and the monitoring host are validated
    assert "Preflight: validate the inventory for the CS appliance" in result.stdout
    assert "Preflight: validate the inventory for the monitoring host" in result.stdout
    assert "failed=0" in result.stdout


def test_example_inventory_passes_once_the_escrow_key_is_set() -> None:
    # as shipped, its placeholder escrow key stops the run, on purpose, with the reason
    shipped = run_preflight(ROOT / "inventories" / "example")
    assert shipped.returncode != 0
    assert "backup_escrow_recipient must be the municipality's offline escrow age PUBLIC key" in shipped.stdout
    assert_passed(run_preflight(ROOT / "inventories" / "example", "-e",
                                f"backup_escrow_recipient={escrow_public_key()}"))


def test_lab_inventory_passes_with_the_lab_pki(tmp_path: Path) -> None:
    # scripts/lab-pki.sh makes escrow.pub at run time; here only that file is needed
    (tmp_path / "escrow.pub").write_text(escrow_public_key() + "\n")
    assert_passed(run_preflight(ROOT / "inventories" / "lab", "-e", f"jukics_lab_pki_dir={tmp_path}"))


def test_bad_value_fails_preflight_naming_the_variable() -> None:
    result = run_preflight(ROOT / "inventories" / "example", "-e", f"backup_escrow_recipient={escrow_public_key()}",
                           "-e", '{"monitoring_node_exporter_enabled": "maybe"}')
    assert result.returncode != 0
    assert "monitoring_node_exporter_enabled" in result.stdout + result.stderr
