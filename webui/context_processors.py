from __future__ import annotations

from typing import Any

from django.http import HttpRequest

import engine


def gantry(request: HttpRequest) -> dict[str, Any]:
    role = getattr(request, "gantry_role", "")
    return {
        "gantry_version": engine.__version__,
        "gantry_role": role,
        "gantry_sees_everyone": role in ("admin", "instructor"),
    }
