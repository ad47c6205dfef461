"""An OCI image-layout archive of a rootfs tarball (one layer), for `podman load -i` (docs/image.md).

Deterministic: the same rootfs tar gives the same digests (no timestamps but the epoch).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data)
    return digest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def image_config(layer_digest: str) -> dict[str, Any]:
    return {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/sbin/init"], "Env": ["container=podman"], "StopSignal": "SIGRTMIN+3"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
    }


def write_archive(rootfs_tar: Path, dest: Path, ref: str) -> str:
    """Write the archive to dest (through a .tmp file); returns the manifest digest."""
    h = hashlib.sha256()
    size = 0
    with rootfs_tar.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    layer = h.hexdigest()
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        info = tarfile.TarInfo(f"blobs/sha256/{layer}")
        info.size, info.mtime, info.mode = size, 0, 0o644
        with rootfs_tar.open("rb") as f:
            tar.addfile(info, f)
        cfg = json.dumps(image_config(layer), sort_keys=True).encode()
        cfg_digest = _blob(tar, cfg)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cfg_digest}",
                       "size": len(cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{layer}",
                        "size": size}],
        }, sort_keys=True).encode()
        man_digest = _blob(tar, manifest)
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{man_digest}",
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref}}]}
        _add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
    shutil.move(tmp, dest)
    return man_digest


if __name__ == "__main__":
    print(write_archive(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
