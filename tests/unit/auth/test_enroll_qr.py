"""Enrollment QR code: the PNG (mode 0600) carries exactly the QR matrix of the provisioning URI."""

from __future__ import annotations

import io
import json
import stat
import struct
import zlib

import segno

from jukics.cli.operator import qr_code, write_qr_png

URI = "otpauth://totp/jukics%20142140:op0001?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=jukics%20142140"


def png_pixels(data: bytes) -> list[list[int]]:
    """A minimal reader for segno's greyscale/palette PNG of bit depth 1 (no decoder is installed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, depth = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth = struct.unpack(">IIB", body[:9])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 1
    raw, stride, rows = zlib.decompress(idat), (width + 7) // 8, []
    prev = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        assert kind in (0, 1, 2)  # none, sub, up: what segno writes
        for i in range(stride):
            if kind == 1 and i:
                line[i] = (line[i] + line[i - 1]) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + prev[i]) & 0xFF
        prev = bytes(line)
        rows.append([(line[x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
    return rows


def test_png_is_the_qr_of_the_uri(tmp_path):
    path = tmp_path / "qr.png"
    write_qr_png(URI, str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pixels = png_pixels(path.read_bytes())
    matrix = segno.make(URI, error="m", micro=False).matrix
    scale, border = 8, 4
    # sample the middle of each module; dark modules are black (0) in the PNG
    sampled = [[1 - pixels[(border + y) * scale + scale // 2][(border + x) * scale + scale // 2]
                for x in range(len(matrix))] for y in range(len(matrix))]
    assert sampled == [[int(bool(v)) for v in row] for row in matrix]
    assert len(matrix) >= 21


def test_terminal_output_and_no_overwrite(tmp_path):
    out = io.StringIO()
    qr_code(URI).terminal(out=out, compact=True)
    assert len(out.getvalue().splitlines()) > 10
    path = tmp_path / "qr.png"
    path.write_bytes(b"keep")
    try:
        write_qr_png(URI, str(path))
        raise AssertionError("overwrote a file")
    except FileExistsError:
        pass
    assert path.read_bytes() == b"keep"


def test_cli_add_prints_uri_and_qr(tmp_path, capsys, monkeypatch, dev_cli):
    from jukics.cli.main import main as cli_main

    base = dev_cli().base
    monkeypatch.setattr("sys.stdin", io.StringIO("Counter-Staff-2026\n"))
    png = tmp_path / "op.png"
    assert cli_main([*base, "operator", "add", "op0009", "--department", "市民課", "--role", "counter",
                     "--expires", "2027-03-31", "--actor", "admin1", "--qr-png", str(png)]) == 0
    out = capsys.readouterr()
    uri = json.loads(out.out.splitlines()[-1])["provisioning_uri"]
    assert uri.startswith("otpauth://totp/") and "secret=" in uri
    assert len(out.err.splitlines()) > 10  # the terminal QR code
    matrix = segno.make(uri, error="m", micro=False).matrix
    pixels = png_pixels(png.read_bytes())
    assert 1 - pixels[4 * 8 + 4][4 * 8 + 4] == int(bool(matrix[0][0]))
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    png2 = tmp_path / "reset.png"
    assert cli_main([*base, "operator", "reset-totp", "op0009", "--actor", "admin1", "--qr-png", str(png2)]) == 0
    new_uri = json.loads(capsys.readouterr().out.splitlines()[-1])["provisioning_uri"]
    assert new_uri != uri and png2.stat().st_size > 100
