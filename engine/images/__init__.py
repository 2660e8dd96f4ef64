"""Images on this node: store (blobs, layers by chain id, image records; tmp dirs, sweep,
gc), pull (from a registry, per-layer progress), load (OCI layouts, docker archives), and
service (the Images service the verbs and the CLI use). Imports layers, registry and below.
"""
