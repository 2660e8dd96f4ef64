"""Terminals: the attach hub that fans a console out to viewers, and the consoles it serves."""
