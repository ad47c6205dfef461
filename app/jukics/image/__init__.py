"""The appliance image: build helpers for the controller (manifest, OCI archive, QEMU command line)
and the first-boot step that runs once on the appliance (docs/image.md)."""
