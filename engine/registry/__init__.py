"""OCI registries over HTTP: the only package that talks to the network.

refs (references and platforms), client (the only module that imports requests: sessions per
host, redirects by hand, body caps), auth (Bearer/Basic, realm checks), hostpolicy (which
hosts may be contacted), credentials (0600 file), blobs (verified, resumable streams),
manifests (index, OCI, Docker). Imports hostfs and below.
"""
