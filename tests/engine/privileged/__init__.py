"""Tests that need root and real kernel features (overlay mounts, runc). Each file probes
what it needs and skips with a reason when it is really absent."""
