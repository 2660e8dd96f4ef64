"""Containers' storage: records, names, rootfs and overlay mounts, binds, volumes, diff,
podman-style JSON."""
