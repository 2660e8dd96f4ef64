"""Terminals: hub (one reader per attach socket, fanned out to viewers with credit-based
flow control and a scrollback ring) and consoles (which socket a container's console or an
exec session is). Imports runtime and below.
"""
