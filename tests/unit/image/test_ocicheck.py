"""The parts of the OCI import check that need no podman: what `podman load` and the container print."""

from __future__ import annotations

import pytest

from jukics.image import ocicheck


@pytest.mark.parametrize(("out", "ref"), [
    ("Getting image source signatures\nLoaded image: localhost/jukics-appliance:latest\n",
     "localhost/jukics-appliance:latest"),
    ("Loaded image(s): localhost/jukics-appliance:latest\n", "localhost/jukics-appliance:latest"),
])
def test_loaded_image(out, ref):
    assert ocicheck.loaded_image(out) == ref


def test_load_without_an_image_name_is_an_error():
    with pytest.raises(ValueError, match="did not name an image"):
        ocicheck.loaded_image("Error: payload does not match any of the supported image formats")


def test_parse_inside():
    out = ("--packages--\nzstd\t1.5.7\tamd64\nbash\t5.2\tamd64\n--end--\ncli=ok\nmachine_id_bytes=0\n"
           "ssh_host_keys=0\nbaked_keys=0\n")
    packages, facts = ocicheck.parse_inside(out)
    assert [p["name"] for p in packages] == ["bash", "zstd"]
    assert facts == {"cli": "ok", "machine_id_bytes": "0", "ssh_host_keys": "0", "baked_keys": "0"}


def test_no_package_list_is_an_error():
    with pytest.raises(ValueError, match="no package list"):
        ocicheck.parse_inside("sh: dpkg-query: not found\n")
