"""Real packets through the role's ruleset in network namespaces: allowed peers pass, wrong ports,
unknown and spoofed MACs and egress to non-peers are dropped and counted, and jukics-firewall
applies, detects drift and rolls back. Expected drops wait 1 s (FWLAB_TIMEOUT)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from firewall_lab import INTERNAL, JUKINET, MAC, PORTS, Lab, lab_inventory, render

APPL_INT = f"{INTERNAL}.10"
APPL_JUK = f"{JUKINET}.10"


@pytest.fixture(scope="module")
def candidate(lab: Lab) -> Path:
    path = render(lab.tmp, lab_inventory(), "candidate.nft")
    lab.sh("appl", "nft", "add", "table", "inet", "sitelocal")  # someone else's table: must survive
    lab.firewall("apply", str(path), "--no-rollback")
    return path


@pytest.fixture
def kizon_mac_restored(lab: Lab) -> Iterator[None]:
    yield
    lab.set_mac("kizon", "eth0", MAC["kizon"])


def lockout_of(lab: Lab, candidate: Path) -> Path:
    """The candidate without the admin SSH rule: loading it cuts the 'controller' (fw-kizon here)."""
    lockout = lab.tmp / "lockout.nft"
    lockout.write_text(re.sub(r'(?m)^.*comment "ssh"\n', "", candidate.read_text(encoding="utf-8")), encoding="utf-8")
    return lockout


def grew(before: dict[str, int], after: dict[str, int], *names: str) -> None:
    for name in names:
        assert after[name] > before[name], f"{name}: {before[name]} -> {after[name]}"


def test_allowed_peers_pass(lab: Lab, candidate: Path) -> None:
    lab.probe("kizon", f"{APPL_INT}:{PORTS['intake']}:open", f"{APPL_INT}:{PORTS['ssh']}:open", f"icmp:{APPL_INT}:open")
    lab.probe("pref", f"{APPL_JUK}:{PORTS['peer']}:open")
    lab.probe("appl", f"{JUKINET}.20:{PORTS['peer']}:open")


def test_wrong_port_is_dropped_and_counted(lab: Lab, candidate: Path) -> None:
    before = lab.counters()
    lab.probe("kizon", f"{APPL_INT}:{PORTS['terminal']}:dropped", f"{APPL_INT}:{PORTS['unlisted']}:dropped")
    lab.probe("pref", f"{APPL_JUK}:{PORTS['ssh']}:dropped", f"{APPL_JUK}:{PORTS['intake']}:dropped")
    grew(before, lab.counters(), "policy_drop_in_internal", "policy_drop_in_jukinet")


def test_unknown_mac_is_dropped_even_from_a_listed_ip(lab: Lab, candidate: Path) -> None:
    before = lab.counters()
    lab.probe("stranger", f"{APPL_INT}:{PORTS['terminal']}:dropped", f"icmp:{APPL_INT}:dropped")
    after = lab.counters()
    grew(before, after, "mac_drop_internal")
    assert after["policy_drop_in_internal"] == before["policy_drop_in_internal"]  # never reached the IP rules


def test_spoofed_mac_is_dropped_and_restored_mac_passes(lab: Lab, candidate: Path, kizon_mac_restored: None) -> None:
    intake = f"{APPL_INT}:{PORTS['intake']}"
    lab.set_mac("kizon", "eth0", MAC["spoofed"])
    before = lab.counters()
    lab.probe("kizon", f"{intake}:dropped")
    grew(before, lab.counters(), "mac_drop_internal")
    lab.set_mac("kizon", "eth0", MAC["kizon"])
    lab.probe("kizon", f"{intake}:open")


def test_egress_to_non_peers_is_dropped_and_counted(lab: Lab, candidate: Path) -> None:
    before = lab.counters()
    lab.probe(
        "appl",
        f"{INTERNAL}.20:{PORTS['intake']}:dropped",  # 既存住基 is a peer inbound only
        f"{INTERNAL}.30:{PORTS['intake']}:dropped",
        f"{JUKINET}.200:{PORTS['peer']}:dropped",  # inside the forbidden 情報提供NWS network
    )
    grew(before, lab.counters(), "policy_drop_out_internal", "forbidden_drop_out")


def test_counters_textfile(lab: Lab, candidate: Path) -> None:
    lab.probe("stranger", f"{APPL_INT}:{PORTS['intake']}:dropped")
    out = lab.tmp / "textfile"
    lab.firewall("textfile", "--dir", str(out))
    text = (out / "jukics_nft.prom").read_text(encoding="utf-8")
    assert re.search(r'(?m)^jukics_nft_mac_drops_total\{zone="internal"\} [1-9]', text), text
    assert re.search(r'(?m)^jukics_nft_policy_drops_total\{direction="in",zone="jukinet"\} \d+$', text), text
    assert re.search(r'(?m)^jukics_nft_forbidden_drops_total\{direction="out"\} \d+$', text), text
    assert "jukics_nft_ruleset_in_sync 1\n" in text
    assert "jukics_nft_rollback_pending 0\n" in text
    assert not re.search(r"\d+\.\d+\.\d+\.\d+|([0-9a-f]{2}:){5}", text), "addresses leaked into metrics"
    assert [p.name for p in out.iterdir()] == ["jukics_nft.prom"]  # the temporary file was renamed


def test_hand_edit_is_drift_and_apply_repairs_it(lab: Lab, candidate: Path) -> None:
    lab.sh("appl", "nft", "insert", "rule", "inet", "jukics", "in_internal", "tcp", "dport", "7777", "accept")
    status = lab.firewall("status", str(candidate), check=False)
    assert status.returncode == 3
    assert "changed by hand" in status.stdout
    lab.firewall("apply", str(candidate), "--no-rollback")
    assert lab.firewall("status", str(candidate), check=False).returncode == 0
    assert "7777" not in lab.sh("appl", "nft", "list", "table", "inet", "jukics").stdout


def test_unconfirmed_change_rolls_back_to_the_previous_ruleset(lab: Lab, candidate: Path) -> None:
    ssh = f"{APPL_INT}:{PORTS['ssh']}"
    lockout = lockout_of(lab, candidate)
    lab.firewall("apply", str(lockout), "--rollback-after", "30", "--timer", "none")
    lab.probe("kizon", f"{ssh}:dropped")
    assert "change is waiting for confirmation" in lab.firewall("status", str(candidate), check=False).stdout
    mismatch = lab.firewall("confirm", str(candidate), check=False)
    assert (mismatch.returncode, mismatch.stderr.split(":")[0]) == (5, "FW-CONFIRM-MISMATCH")

    lab.firewall("rollback", "--reason", "test")  # what the systemd timer runs
    lab.probe("kizon", f"{ssh}:open")
    assert lab.firewall("status", str(candidate), check=False).returncode == 0
    late = lab.firewall("confirm", str(lockout), check=False)
    assert (late.returncode, late.stderr.split(":")[0]) == (4, "FW-CONFIRM-NOTHING-PENDING")
    assert (lab.tmp / "state" / "last-rollback").read_text(encoding="utf-8").strip().isdigit()
    assert "table inet sitelocal" in lab.sh("appl", "nft", "list", "tables").stdout
    # the boot file stayed the confirmed ruleset throughout
    assert (lab.tmp / "boot" / "jukics.nft").read_text(encoding="utf-8") == candidate.read_text(encoding="utf-8")


def test_new_apply_first_undoes_an_unconfirmed_one(lab: Lab, candidate: Path) -> None:
    lab.firewall("apply", str(lockout_of(lab, candidate)), "--rollback-after", "30", "--timer", "none")
    lab.firewall("apply", str(candidate), "--rollback-after", "30", "--timer", "none")
    lab.firewall("rollback")
    # the snapshot taken by the second apply is the confirmed ruleset, not the lock-out
    lab.probe("kizon", f"{APPL_INT}:{PORTS['ssh']}:open")
    assert lab.firewall("status", str(candidate), check=False).returncode == 0


def test_invalid_candidate_changes_nothing(lab: Lab, candidate: Path) -> None:
    broken = lab.tmp / "broken.nft"
    broken.write_text(candidate.read_text(encoding="utf-8").replace("policy drop;", "policy maybe;", 1))
    result = lab.firewall("apply", str(broken), "--rollback-after", "30", "--timer", "none", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("FW-NFT-INVALID:")
    assert lab.firewall("status", str(candidate), check=False).returncode == 0
    lab.probe("kizon", f"{APPL_INT}:{PORTS['intake']}:open")
