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


def test_the_tar_stream_is_made_and_taken_apart_without_a_tar_file(tmp_path):
    import io
    import tarfile

    db = tmp_path / "src.sqlite"
    db.write_bytes(bytes(range(256)) * 5000 + b"tail")
    members = [("manifest.json", b'{"a": 1}'), ("manifest.mac", b"ab" * 32), ("db.sqlite", db)]
    stream = bk._TarSource(members, 1_700_000_000).read()
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:  # a standard tar
        assert tar.getnames() == ["manifest.json", "manifest.mac", "db.sqlite"]
    # a tar as format v1 wrote it (PAX, float mtime: a pax header per member) takes apart too
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("manifest.json"), io.BytesIO(b""))
        tar.add(db, arcname="db.sqlite")
    for data in (stream, buf.getvalue()):
        sink = bk._TarSink({"db.sqlite": tmp_path / "out.sqlite"})
        for i in range(0, len(data), 7000):  # odd chunk sizes, as the decryptor hands them over
            sink.write(data[i:i + 7000])
        sink.finish()
        assert (tmp_path / "out.sqlite").read_bytes() == db.read_bytes() and sink.db_seen
    sink = bk._TarSink({"db.sqlite": tmp_path / "cut.sqlite"})
    sink.write(stream[: len(stream) // 2])
    try:
        sink.finish()
        raise AssertionError("a cut stream must not pass")
    except bk._TarDamaged:
        pass
