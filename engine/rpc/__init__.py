"""Requests over the channel layer: dispatch (the envelope, the verb table, replies) and
worker (the loop on the engine's channel, the FIFO publisher, heartbeats). Imports api and
below; no other engine package imports it (the worker entry, webui/management/commands/
engine.py, does).
"""
