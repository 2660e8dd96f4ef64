"""The host filesystem, safely: openat2 path resolution, atomic writes, iterative removal, file
locks, subprocesses, digests."""
