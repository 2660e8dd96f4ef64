"""Requests over the channel layer: argument checks, dispatch to the verbs, and the worker loop."""
