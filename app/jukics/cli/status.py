"""`jukics status`: where this appliance stands, for the operator at the console (docs/image.md).

  status [--json]   first boot (TPM provisioned, CSRs written), certificate installed, service ready

Exit 0: ready (certificate installed); 3: waiting for certificates (not a failure); 1: first boot failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jukics.config import Config

EXIT_READY, EXIT_FAILED, EXIT_WAITING = 0, 1, 3


def appliance_status(config: Config, root: Path = Path("/")) -> tuple[int, dict[str, Any]]:
    from jukics.image.firstboot import read_status

    first = read_status(root)
    cert = Path(config.intake.cert_file)
    has_cert = (root / cert.relative_to("/")).is_file() if cert.is_absolute() else cert.is_file()
    doc: dict[str, Any] = {"first_boot": first, "intake_certificate": str(cert), "certificate_installed": has_cert}
    if first is not None and first.get("state") == "failed":
        doc["state"], doc["next"] = "first-boot-failed", f"fix: {first.get('error')}; then reboot"
        return EXIT_FAILED, doc
    if has_cert:
        doc["state"], doc["next"] = "ready", "none"
        return EXIT_READY, doc
    doc["state"] = "awaiting-certificates"
    doc["next"] = ("have the site CA sign the CSRs (jukics cert status) and install them: "
                   "ansible-playbook playbooks/site.yml (docs/image.md)")
    return EXIT_WAITING, doc


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    rc, doc = appliance_status(config)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(f"state: {doc['state']}\nnext: {doc['next']}")
    return rc


def register(sub: Any) -> None:
    what = "where this appliance stands: first boot, certificates, ready (exit 3: waiting for certificates)"
    p = sub.add_parser("status", help=what, description=what)
    p.set_defaults(func=cmd_status)
    p.add_argument("--json", action="store_true")
