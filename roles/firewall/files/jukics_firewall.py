#!/usr/bin/python3
"""jukics-firewall: load the jukics nftables tables atomically, with an automatic rollback.

Installed by the Ansible role `firewall` as /usr/local/sbin/jukics-firewall. The role renders a candidate
ruleset, validates it with `nft -c`, then:

  apply CANDIDATE     snapshot our tables, arm a systemd timer that restores the snapshot, load the candidate
  confirm CANDIDATE   (the controller could still reach us) cancel the timer, make the candidate the boot file
  rollback            restore the snapshot (run by the timer; safe to run by hand)
  status CANDIDATE    exit 0 when the running tables are the confirmed ones, 3 when they drifted
  textfile            write the drop counters in Prometheus textfile format for node_exporter

Only the tables named in TABLES are ever read, replaced or restored: other tables (podman's, a site's
own) are left alone. A lock serialises every command, so a late timer cannot race a confirm.
Stable error codes (FW-...) head every failure message.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

NFT = "/usr/sbin/nft"
SYSTEMCTL = "/usr/bin/systemctl"
SYSTEMD_RUN = "/usr/bin/systemd-run"
TABLES = (("inet", "jukics"), ("netdev", "jukics_mac"))
EXIT_DRIFT = 3
EXIT_NOTHING_PENDING = 4
EXIT_MISMATCH = 5


class FirewallError(Exception):
    """A failure with a stable code; printed as `CODE: message`."""

    def __init__(self, code: str, message: str, exit_code: int = 1) -> None:
        super().__init__(f"{code}: {message}")
        self.exit_code = exit_code


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if check and proc.returncode != 0:
        raise FirewallError("FW-COMMAND-FAILED", f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def present_tables() -> set[tuple[str, str]]:
    out = run([NFT, "-j", "list", "tables"]).stdout
    items = json.loads(out).get("nftables", []) if out.strip() else []
    return {(i["table"]["family"], i["table"]["name"]) for i in items if "table" in i}


def listing(*, stateless: bool) -> str:
    """Our tables as nft prints them; stateless omits counter values (for drift checks)."""
    present = present_tables()
    parts = []
    for family, name in TABLES:
        if (family, name) in present:
            flags = ["-s"] if stateless else []
            parts.append(run([NFT, *flags, "list", "table", family, name]).stdout.rstrip("\n"))
        else:
            parts.append(f"# table {family} {name}: absent")
    return "\n".join(parts) + "\n"


def replace_header() -> str:
    """Create-then-delete each table so the load that follows replaces it in the same transaction.

    `destroy table` would be shorter but needs nft >= 1.0.8; this idiom works on every version.
    """
    return "".join(f"table {f} {n}\ndelete table {f} {n}\n" for f, n in TABLES)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_atomic(path: Path, data: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class State:
    """Files under the state directory (default /var/lib/jukics-firewall)."""

    def __init__(self, root: Path, boot_file: Path, unit: str) -> None:
        self.root = root
        self.boot_file = boot_file
        self.unit = unit
        self.snapshot = root / "rollback.nft"
        self.armed = root / "armed.json"
        self.applied_sha = root / "applied.sha256"
        self.applied_listing = root / "applied.listing"
        self.last_rollback = root / "last-rollback"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.root / "lock", "w", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def armed_info(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.armed.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None


def disarm_timer(state: State) -> None:
    if not Path(SYSTEMCTL).exists():
        return
    for verb in ("stop", "reset-failed"):
        run([SYSTEMCTL, verb, f"{state.unit}.timer", f"{state.unit}.service"], check=False)


def arm_timer(state: State, seconds: int) -> None:
    disarm_timer(state)
    run(
        [
            SYSTEMD_RUN,
            f"--unit={state.unit}",
            "--description=jukics firewall: restore the previous ruleset (change not confirmed)",
            f"--on-active={seconds}s",
            "--timer-property=AccuracySec=1s",
            "--timer-property=RemainAfterElapse=no",
            "--property=Type=oneshot",
            sys.executable,
            os.path.realpath(sys.argv[0]),
            f"--state-dir={state.root}",
            f"--boot-file={state.boot_file}",
            f"--unit={state.unit}",
            "rollback",
            "--reason=timer",
        ]
    )


def nft_check(path: Path, what: str) -> None:
    proc = run([NFT, "-c", "-f", str(path)], check=False)
    if proc.returncode != 0:
        raise FirewallError("FW-NFT-INVALID", f"{what} {path} does not pass nft -c: {proc.stderr.strip()}")


def commit(state: State, candidate: Path) -> None:
    """Make the running ruleset the confirmed one: boot file, hash and listing for drift checks."""
    write_atomic(state.boot_file, candidate.read_text(encoding="utf-8"), 0o644)
    write_atomic(state.applied_sha, sha256(candidate) + "\n")
    write_atomic(state.applied_listing, listing(stateless=True))


def do_rollback(state: State, reason: str) -> bool:
    """Restore the snapshot if a change is pending. Caller holds the lock."""
    info = state.armed_info()
    if info is None:
        return False
    run([NFT, "-f", str(state.snapshot)])
    state.armed.unlink()
    write_atomic(state.last_rollback, f"{int(time.time())}\n", 0o644)
    print(
        f"FW-ROLLED-BACK: restored the ruleset saved before the unconfirmed change "
        f"(candidate sha256 {info.get('candidate_sha256')}, reason: {reason})",
        file=sys.stderr,
    )
    return True


def cmd_apply(state: State, args: argparse.Namespace) -> int:
    candidate = Path(args.candidate)
    nft_check(candidate, "candidate")
    with state.locked():
        if state.armed.exists():
            # An earlier change was never confirmed: go back to the last good ruleset before snapshotting.
            do_rollback(state, "superseded by a new apply")
            disarm_timer(state)
        write_atomic(state.snapshot, replace_header() + listing(stateless=False))
        nft_check(state.snapshot, "rollback snapshot")
        if args.no_rollback:
            run([NFT, "-f", str(candidate)])
            commit(state, candidate)
            print(f"applied {candidate} without rollback")
            return 0
        deadline = int(time.time()) + args.rollback_after
        write_atomic(
            state.armed,
            json.dumps({"candidate_sha256": sha256(candidate), "deadline": deadline, "timer": args.timer}),
        )
        if args.timer == "systemd":
            arm_timer(state, args.rollback_after)
        proc = run([NFT, "-f", str(candidate)], check=False)
        if proc.returncode != 0:
            state.armed.unlink()
            disarm_timer(state)
            raise FirewallError("FW-LOAD-FAILED", f"nft -f {candidate} failed, nothing changed: {proc.stderr.strip()}")
        print(f"applied {candidate}; rollback in {args.rollback_after}s unless confirmed")
        return 0


def cmd_confirm(state: State, args: argparse.Namespace) -> int:
    candidate = Path(args.candidate)
    with state.locked():
        info = state.armed_info()
        if info is None:
            raise FirewallError(
                "FW-CONFIRM-NOTHING-PENDING",
                "no change is waiting for confirmation: the automatic rollback may already have restored "
                f"the previous ruleset (journalctl -u {state.unit})",
                EXIT_NOTHING_PENDING,
            )
        if info.get("candidate_sha256") != sha256(candidate):
            raise FirewallError(
                "FW-CONFIRM-MISMATCH",
                f"{candidate} is not the ruleset that was applied; refusing to confirm",
                EXIT_MISMATCH,
            )
        if info.get("timer") == "systemd":
            disarm_timer(state)
        commit(state, candidate)
        state.armed.unlink()
    print(f"confirmed {candidate}; installed as {state.boot_file}")
    return 0


def cmd_rollback(state: State, args: argparse.Namespace) -> int:
    with state.locked():
        rolled = do_rollback(state, args.reason)
        if args.reason != "timer":
            disarm_timer(state)
    print("rolled back" if rolled else "nothing to roll back")
    return 0


def drift_reasons(state: State, candidate: Path | None) -> list[str]:
    reasons = []
    if state.armed.exists():
        reasons.append("a change is waiting for confirmation")
    try:
        applied = state.applied_sha.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return [*reasons, "no ruleset has been confirmed on this host yet"]
    if candidate is not None:
        if not candidate.exists():
            reasons.append(f"{candidate} is missing")
        elif sha256(candidate) != applied:
            reasons.append(f"{candidate} differs from the confirmed ruleset")
    if not state.boot_file.exists() or sha256(state.boot_file) != applied:
        reasons.append(f"{state.boot_file} differs from the confirmed ruleset")
    try:
        expected = state.applied_listing.read_text(encoding="utf-8")
    except FileNotFoundError:
        expected = ""
    if listing(stateless=True) != expected:
        reasons.append("the running tables differ from the confirmed ruleset (changed by hand, or not loaded)")
    return reasons


def cmd_status(state: State, args: argparse.Namespace) -> int:
    reasons = drift_reasons(state, Path(args.candidate))
    for reason in reasons:
        print(f"drift: {reason}")
    if not reasons:
        print("in sync")
    return EXIT_DRIFT if reasons else 0


COUNTER_PATTERNS = (
    (re.compile(r"^mac_drop_(?P<zone>\w+)$"), "mac"),
    (re.compile(r"^policy_drop_(?P<direction>in|out)_(?P<zone>\w+)$"), "policy"),
    (re.compile(r"^policy_drop_(?P<direction>forward)$"), "policy"),
    (re.compile(r"^forbidden_drop_(?P<direction>in|out)$"), "forbidden"),
)
METRICS = {
    "mac": (
        "jukics_nft_mac_drops_total",
        "Frames dropped at ingress because their source MAC is not on the zone's allowlist.",
    ),
    "policy": (
        "jukics_nft_policy_drops_total",
        "Packets dropped by the default-deny policy, by zone and direction.",
    ),
    "forbidden": (
        "jukics_nft_forbidden_drops_total",
        "Packets to or from a forbidden network (団体内統合宛名, 情報提供NWS) that were dropped.",
    ),
}


def render_metrics(state: State) -> str:
    """Prometheus text format. Labels carry zone names and directions only: never addresses."""
    out = run([NFT, "-j", "list", "counters"]).stdout
    items = json.loads(out).get("nftables", []) if out.strip() else []
    ours = {name for _, name in TABLES}
    samples: dict[str, list[str]] = {kind: [] for kind in METRICS}
    for item in items:
        counter = item.get("counter")
        if not counter or counter.get("table") not in ours:
            continue
        for pattern, kind in COUNTER_PATTERNS:
            match = pattern.match(counter["name"])
            if match:
                groups = match.groupdict()
                if kind == "policy" and groups["direction"] == "forward":
                    groups["zone"] = "any"
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(groups.items()))
                samples[kind].append(f"{METRICS[kind][0]}{{{labels}}} {int(counter['packets'])}")
                break
    lines = []
    for kind, (metric, help_text) in METRICS.items():
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", *sorted(samples[kind])]
    in_sync = 0 if drift_reasons(state, None) else 1
    try:
        last_rollback = int(state.last_rollback.read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        last_rollback = 0
    gauges = (
        ("jukics_nft_ruleset_in_sync", "1 when the running jukics tables are the confirmed ruleset.", in_sync),
        ("jukics_nft_rollback_pending", "1 while a firewall change waits for confirmation.", int(state.armed.exists())),
        ("jukics_nft_last_rollback_timestamp_seconds", "Time of the last rollback (0: never).", last_rollback),
    )
    for metric, help_text, value in gauges:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", f"{metric} {value}"]
    return "\n".join(lines) + "\n"


def cmd_textfile(state: State, args: argparse.Namespace) -> int:
    target = Path(args.dir) / "jukics_nft.prom"
    # Rename within the directory: node_exporter never reads a half-written file.
    write_atomic(target, render_metrics(state), 0o644)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jukics-firewall", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", default="/var/lib/jukics-firewall", type=Path)
    p.add_argument("--boot-file", default="/etc/nftables.d/jukics.nft", type=Path)
    p.add_argument("--unit", default="jukics-firewall-rollback", help="name of the transient rollback timer")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("apply", help="load CANDIDATE with an automatic rollback armed")
    a.add_argument("candidate")
    group = a.add_mutually_exclusive_group(required=True)
    group.add_argument("--rollback-after", type=int, metavar="SECONDS")
    group.add_argument("--no-rollback", action="store_true", help="load and confirm at once (no anti-lockout)")
    a.add_argument(
        "--timer",
        choices=("systemd", "none"),
        default="systemd",
        help="none: arm the rollback without scheduling it (tests call rollback themselves)",
    )
    c = sub.add_parser("confirm", help="cancel the rollback and make CANDIDATE the boot ruleset")
    c.add_argument("candidate")
    r = sub.add_parser("rollback", help="restore the ruleset saved before the unconfirmed change")
    r.add_argument("--reason", default="manual")
    s = sub.add_parser("status", help="exit 0 if in sync with the confirmed ruleset, 3 if drifted")
    s.add_argument("candidate")
    t = sub.add_parser("textfile", help="write drop counters for node_exporter's textfile collector")
    t.add_argument("--dir", default="/var/lib/prometheus/node-exporter")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "rollback_after", None) is not None and args.rollback_after < 1:
        print("FW-ROLLBACK-BOUNDS: --rollback-after must be at least 1 second", file=sys.stderr)
        return 2
    state = State(args.state_dir, args.boot_file, args.unit)
    commands = {
        "apply": cmd_apply,
        "confirm": cmd_confirm,
        "rollback": cmd_rollback,
        "status": cmd_status,
        "textfile": cmd_textfile,
    }
    try:
        return commands[args.command](state, args)
    except FirewallError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
