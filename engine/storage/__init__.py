"""Containers' storage: records and names, rootfs (the overlay of an image's layers plus an
upper dir, mounted and unmounted by a count, as podman mount has), mounts (the kernel's
table), binds and volumes (checked sources, staged for runc), diff, and podman-style JSON.
containers.Containers is the service. Imports images and below.
"""
