"""The engine's verbs, one module per domain (engine.api.verbs lists them), on the framework of
engine.api.base (Context, ``@op``) and engine.api.args (argument checks)."""
