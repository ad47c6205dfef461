"""The cs_service role's wheelhouse builder (roles/cs_service/files/jukics_wheelhouse.py), offline parts.

Downloading and building need pip and an index; molecule covers those. Here: the bundle is
deterministic and names the wheel set by its content, bad wheel sets are refused with stable codes,
and wheels that cannot run on the target are caught on the controller.
"""

import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "roles" / "cs_service" / "files" / "jukics_wheelhouse.py"

spec = importlib.util.spec_from_file_location("jukics_wheelhouse", SCRIPT)
assert spec and spec.loader
wh = importlib.util.module_from_spec(spec)
sys.modules["jukics_wheelhouse"] = wh
spec.loader.exec_module(wh)

TARGET = wh.Target("3.13", wh.DEFAULT_PLATFORMS)
NAMES = [
    "jukics-0.1.0-py3-none-any.whl",
    "falcon-4.4.0-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
    "cryptography-50.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
]


def make_wheels(folder: Path, names: list[str] = NAMES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.write_bytes(b"wheel bytes of " + name.encode())
        paths.append(path)
    return paths


def bundle(folder: Path, cache: Path) -> tuple[str, Path, bool]:
    return wh.make_bundle([wh.parse_wheel(p) for p in sorted(folder.glob("*.whl"))], cache)


def test_same_wheels_give_the_same_digest_and_an_identical_tar(tmp_path):
    make_wheels(tmp_path / "a")
    make_wheels(tmp_path / "b", list(reversed(NAMES)))
    digest_a, tar_a, created_a = bundle(tmp_path / "a", tmp_path / "cache-a")
    digest_b, tar_b, _ = bundle(tmp_path / "b", tmp_path / "cache-b")
    assert created_a
    assert digest_a == digest_b
    assert tar_a.read_bytes() == tar_b.read_bytes()


def test_a_second_bundle_of_the_same_wheels_reuses_the_first(tmp_path):
    make_wheels(tmp_path / "w")
    first = bundle(tmp_path / "w", tmp_path / "cache")
    second = bundle(tmp_path / "w", tmp_path / "cache")
    assert first[:2] == second[:2]
    assert second[2] is False


def test_one_changed_wheel_changes_the_digest(tmp_path):
    make_wheels(tmp_path / "w")
    before, _, _ = bundle(tmp_path / "w", tmp_path / "cache")
    (tmp_path / "w" / NAMES[0]).write_bytes(b"a new jukics build")
    after, _, created = bundle(tmp_path / "w", tmp_path / "cache")
    assert after != before
    assert created


def test_tar_holds_checksums_and_a_hash_pinned_lock_for_every_wheel(tmp_path):
    paths = make_wheels(tmp_path / "w")
    digest, tar_path, _ = bundle(tmp_path / "w", tmp_path / "cache")
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        sums = tar.extractfile("SHA256SUMS").read()
        lock = tar.extractfile("requirements.lock").read().decode()
    assert set(members) == {"SHA256SUMS", "requirements.lock"} | {f"wheels/{p.name}" for p in paths}
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
    assert hashlib.sha256(sums).hexdigest() == digest
    for p in paths:
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        assert f"{sha}  wheels/{p.name}\n" in sums.decode()
    assert "jukics==0.1.0 --hash=sha256:" in lock
    assert "python_dateutil==2.9.0.post0 --hash=sha256:" in lock
    assert len(lock.splitlines()) == len(paths)


def test_two_wheels_of_one_project_are_refused(tmp_path):
    make_wheels(tmp_path / "w", [*NAMES, "falcon-4.3.0-py3-none-any.whl"])
    with pytest.raises(wh.WheelhouseError) as err:
        bundle(tmp_path / "w", tmp_path / "cache")
    assert err.value.code == "E_DUPLICATE"


def test_a_wheel_set_without_jukics_is_refused(tmp_path):
    make_wheels(tmp_path / "w", NAMES[1:])
    with pytest.raises(wh.WheelhouseError) as err:
        bundle(tmp_path / "w", tmp_path / "cache")
    assert err.value.code == "E_NO_JUKICS"


@pytest.mark.parametrize("name", NAMES)
def test_wheels_for_the_target_are_accepted(tmp_path, name):
    (path,) = make_wheels(tmp_path, [name])
    wh.check_compatible(wh.parse_wheel(path), TARGET)


@pytest.mark.parametrize(
    "name",
    [
        "falcon-4.4.0-cp311-cp311-manylinux2014_x86_64.whl",  # the controller's Python, not the target's
        "falcon-4.4.0-cp313-cp313-win_amd64.whl",
        "falcon-4.4.0-cp313-cp313-manylinux_2_17_aarch64.whl",
        "falcon-4.4.0-cp313-cp313-musllinux_1_2_x86_64.whl",
    ],
)
def test_wheels_that_cannot_run_on_the_target_are_refused(tmp_path, name):
    (path,) = make_wheels(tmp_path, [name])
    with pytest.raises(wh.WheelhouseError) as err:
        wh.check_compatible(wh.parse_wheel(path), TARGET)
    assert err.value.code == "E_WHEEL_TARGET"


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path):
    path = tmp_path / "falcon-4.4.0.tar.gz"
    path.write_bytes(b"sdist")
    with pytest.raises(wh.WheelhouseError) as err:
        wh.parse_wheel(path)
    assert err.value.code == "E_WHEEL_NAME"


def test_cli_bundle_prints_the_digest_and_refuses_a_missing_folder(tmp_path, capsys):
    make_wheels(tmp_path / "w")
    assert wh.main(["bundle", "--wheels", str(tmp_path / "w"), "--cache", str(tmp_path / "cache")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["digest"]) == 64
    assert "jukics==0.1.0" in out["wheels"]
    assert Path(out["tar"]).is_file()

    assert wh.main(["bundle", "--wheels", str(tmp_path / "nope"), "--cache", str(tmp_path / "cache")]) == 2
    assert "E_SOURCE" in capsys.readouterr().err


def test_cli_refuses_a_target_version_that_is_not_3_x(tmp_path, capsys):
    args = ["bundle", "--wheels", str(tmp_path), "--cache", str(tmp_path / "c"), "--python-version", "313"]
    assert wh.main(args) == 2
    assert "E_TARGET" in capsys.readouterr().err


def test_old_bundles_are_pruned_to_the_newest_five(tmp_path):
    for i in range(7):
        make_wheels(tmp_path / f"w{i}", [*NAMES[1:], f"jukics-0.1.{i}-py3-none-any.whl"])
        bundle(tmp_path / f"w{i}", tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "bundles").iterdir())) == wh.KEEP_BUNDLES


def test_tar_member_is_written_with_fixed_metadata():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        wh._tar_add(tar, "x", b"data")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        (member,) = tar.getmembers()
    assert (member.mode, member.mtime, member.uid, member.gid, member.size) == (0o644, 0, 0, 0, 4)
