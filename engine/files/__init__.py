"""A container's files: explorer (browse, read, write, rename, chmod below its merged root,
by descriptor), fsio and listing and owners (its parts), cptree and dirtar and transfer
(podman cp, uploads, tar streams of a tree), bulk (the Redis-list lane of downloads).
Imports storage and below.
"""
