"""Page digests: one pass over the file, one digest per table (with its indexes), sensitive to any
changed record of that table and to nothing else's."""

from __future__ import annotations

import shutil
import sqlite3

from jukics.backup import archive as bk


def _db(path):
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE a (id INTEGER PRIMARY KEY, v BLOB);
        CREATE INDEX a_v ON a (v);
        CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT);
    """)
    conn.executemany("INSERT INTO a (v) VALUES (?)", [(bytes([i % 251]) * 300,) for i in range(3000)])
    conn.executemany("INSERT INTO b (v) VALUES (?)", [(f"row {i}",) for i in range(500)])
    conn.commit()
    conn.close()


def test_page_digests_follow_the_records(tmp_path):
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    _db(one)
    shutil.copy(one, two)
    counts, digests, whole, method = bk.page_digests(one)
    assert method == bk.DIGEST_PAGES and counts == {"a": 3000, "b": 500}
    assert whole == bk._file_sha256(one)
    assert bk.page_digests(two)[1] == digests  # equal files, equal digests
    conn = sqlite3.connect(two)
    conn.execute("UPDATE b SET v = 'changed' WHERE id = 250")
    conn.commit()
    conn.close()
    _, after, whole_after, _ = bk.page_digests(two)
    assert after["b"] != digests["b"] and after["a"] == digests["a"] and whole_after != whole
    # row digests (format v1) are unchanged in meaning: they still see the same rows
    with sqlite3.connect(one) as c1:
        assert bk.table_digests(c1)[0] == counts
