"""The host filesystem, safely: the bottom of the engine.

securepath (openat2 RESOLVE_IN_ROOT / BENEATH: every untrusted path is resolved here), atomic
(write temp + fsync + rename), rmtree (iterative, by descriptor), locks (per-object flocks
shared by the CLI and the worker), proc (the one subprocess helper), digests.
Imports only core, config, events, protocol and errors.
"""
