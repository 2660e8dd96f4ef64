"""The hands-on lab: its steps and the checks read from the engine's state."""
