"""The handlers of the engine's verbs, one module per domain (engine.api.verbs lists them), on
engine.api.base (Context, ``@op``, ``invoke``). What each verb takes and answers is declared in
engine.protocol.verbs and checked by engine.protocol.check before a handler runs."""
