from __future__ import annotations

from typing import Any

from django.http import HttpRequest

import engine


def gantry(request: HttpRequest) -> dict[str, Any]:
    return {"gantry_version": engine.__version__}
