"""The links textfile is readable by node_exporter although the worker runs with UMask=0077."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jukics.links.metrics import write_textfile


def test_textfile_is_world_readable_under_a_strict_umask_and_leaves_no_temporary(tmp_path: Path) -> None:
    rows = [{"link": "prefecture", "pending": 3, "dead_letters": 0, "consecutive_failures": 12,
             "oldest_pending_created_at": None, "last_success_at": None}]
    out = tmp_path / "jukics_links.prom"
    old = os.umask(0o077)
    try:
        write_textfile(out, lambda: rows)
        write_textfile(out, lambda: rows)  # replaces the file in place
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert 'jukics_link_consecutive_failures{link="prefecture"} 12.0' in out.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["jukics_links.prom"]
