"""The backup, drill and purge textfiles are 0644 even under the units' UMask=0077 (node_exporter reads them)."""

from __future__ import annotations

import os
import stat

from jukics.backup import archive as bk


def test_textfile_is_world_readable_under_a_strict_umask(tmp_path):
    old = os.umask(0o077)
    try:
        for name in ("jukics_backup", "jukics_backup_drill", "jukics_purge"):
            bk.write_textfile(tmp_path, name, {f"{name}_last_result": ("1 when ok", 1)})
            bk.write_textfile(tmp_path, name, {f"{name}_last_result": ("1 when ok", 0)})  # replaced, still 0644
            st = (tmp_path / f"{name}.prom").stat()
            assert stat.S_IMODE(st.st_mode) == 0o644, oct(st.st_mode)
            assert f"{name}_last_result 0.0" in (tmp_path / f"{name}.prom").read_text()
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jukics_backup.prom", "jukics_backup_drill.prom",
                                                           "jukics_purge.prom"]  # no temp file left
