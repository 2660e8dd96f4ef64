"""OCI registries: references, the HTTP client (the only user of requests), auth, host policy,
credentials, blobs, manifests."""
