"""One error hierarchy for the whole engine, with stable codes that travel over the RPC.

Messages are lowercase phrases that read like a stack when wrapped ("pull busybox: fetch
manifest: 404 not found"). The worker turns any EngineError into an error reply; anything
else becomes code "internal" and is logged with its traceback.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    """Base of every error the engine reports on purpose."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class NotFoundError(EngineError):
    code = "not_found"


class ImageNotFoundError(NotFoundError):
    """No such image (details: what="image", so a client tells it from other not-founds)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **({"what": "image"} | details))


class ContainerNotFoundError(NotFoundError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **({"what": "container"} | details))


class InvalidInputError(EngineError):
    """The request itself is wrong: a bad reference, path, option or argument."""

    code = "invalid_input"


class InvalidStateError(EngineError):
    """The object exists but is in a state the operation does not accept."""

    code = "invalid_state"

    def __init__(self, message: str, *, current: str = "", wanted: tuple[str, ...] = ()) -> None:
        super().__init__(message, current=current, wanted=list(wanted))

    @property
    def current(self) -> str:
        return str(self.details.get("current", ""))


class PolicyError(EngineError):
    """The request is well formed but the admin's policy refuses it (names rule and field)."""

    code = "policy"

    def __init__(self, message: str, *, rule: str = "", field: str = "") -> None:
        super().__init__(message, rule=rule, field=field)

    @property
    def rule(self) -> str:
        return str(self.details.get("rule", ""))

    @property
    def field(self) -> str:
        return str(self.details.get("field", ""))


class RegistryError(EngineError):
    """A registry answered badly or not at all. Retried unless permanent."""

    code = "registry"

    def __init__(self, message: str, *, status: int = 0, permanent: bool = True) -> None:
        super().__init__(message, status=status, permanent=permanent)

    @property
    def status(self) -> int:
        return int(self.details.get("status", 0))

    @property
    def permanent(self) -> bool:
        return bool(self.details.get("permanent", True))


class InvalidImageError(EngineError):
    """Image content failed verification: digest or size mismatch, unsafe tar entry, ..."""

    code = "invalid_image"


class RuntimeFailedError(EngineError):
    """A host command (runc, conmon, mount, ...) failed; carries its argv and stderr."""

    code = "runtime"

    def __init__(
        self, message: str, *, argv: list[str] | None = None, returncode: int = 0, stderr: str = ""
    ) -> None:
        super().__init__(message, argv=list(argv or []), returncode=returncode, stderr=stderr)

    @property
    def stderr(self) -> str:
        return str(self.details.get("stderr", ""))


class EngineOfflineError(EngineError):
    """Raised by clients (never by the engine) when no engine answers in time."""

    code = "offline"


CODES: dict[str, type[EngineError]] = {
    cls.code: cls
    for cls in (
        EngineError,
        NotFoundError,
        InvalidInputError,
        InvalidStateError,
        PolicyError,
        RegistryError,
        InvalidImageError,
        RuntimeFailedError,
        EngineOfflineError,
    )
}


NOT_FOUND_KINDS: dict[str, type[NotFoundError]] = {
    "image": ImageNotFoundError,
    "container": ContainerNotFoundError,
}


def from_dict(data: dict[str, Any]) -> EngineError:
    """Rebuild an error from a reply (client side). Unknown codes become EngineError."""
    code = str(data.get("code", "internal"))
    cls = CODES.get(code, EngineError)
    details = data.get("details")
    if cls is NotFoundError and isinstance(details, dict):
        cls = NOT_FOUND_KINDS.get(str(details.get("what")), NotFoundError)
    err = cls.__new__(cls)
    EngineError.__init__(
        err,
        str(data.get("message", "engine error")),
        **(details if isinstance(details, dict) else {}),
    )
    return err
