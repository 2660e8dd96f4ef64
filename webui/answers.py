"""How an engine error is told to a person: its HTTP status and its sentence."""

from __future__ import annotations

from engine.errors import EngineError

# The engine's error codes as HTTP statuses: what the user asked wrongly is a 4xx, what the
# registry or the runtime failed at a 502, an engine that does not answer a 503, and anything
# else a 500 that says nothing of the inside (the engine's log has it).
STATUS_BY_CODE = {
    "invalid_input": 400,
    "policy": 403,
    "not_found": 404,
    "invalid_state": 409,
    "invalid_image": 422,
    "registry": 502,
    "runtime": 502,
    "offline": 503,
}
INTERNAL_MESSAGE = "the engine failed on this request; its log says why"


def status_of(err: EngineError) -> int:
    return STATUS_BY_CODE.get(err.code, 500)


def error_text(err: EngineError) -> str:
    """The sentence a person sees: the engine's own, unless the failure is internal."""
    return INTERNAL_MESSAGE if status_of(err) == 500 else err.message
