"""Logging in, with password guessing slowed down: per account and per address, failed logins
are counted in fixed windows of WINDOW seconds (in the shared cache, Redis, so every web
process counts together). Past the limit, a login is refused without its password being
checked, with a clear message and status 429, until the window ends.

A disabled account cannot log in (Django's ModelBackend refuses inactive users), and says
the same as a wrong password: nothing tells a guesser which names exist.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponse

WINDOW = 60  # seconds
PER_ACCOUNT = 5  # failed logins of one account per window
PER_ADDRESS = 50  # from one address (a class behind one NAT shares it)


class Throttle:
    """Failed logins per account and per address, in fixed windows."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        window: int = WINDOW,
        per_account: int = PER_ACCOUNT,
        per_address: int = PER_ADDRESS,
    ) -> None:
        self.clock, self.window = clock, window
        self.limits = {"account": per_account, "address": per_address}

    def _keys(self, username: str, address: str) -> dict[str, str]:
        slot = int(self.clock() // self.window)
        return {
            # hashed: whatever was typed as a name (spaces, controls) makes a plain key
            "account": f"gantry:login:account:{_digest(username.lower())}:{slot}",
            "address": f"gantry:login:address:{_digest(address)}:{slot}",
        }

    def wait(self, username: str, address: str) -> tuple[str, int]:
        """("account"|"address", seconds to wait) when a login must be refused, else ("", 0)."""
        counts = cache.get_many(list(self._keys(username, address).values()))
        for kind, key in self._keys(username, address).items():
            if int(counts.get(key, 0)) >= self.limits[kind]:
                return kind, max(1, self.window - int(self.clock() % self.window))
        return "", 0

    def failed(self, username: str, address: str) -> None:
        for key in self._keys(username, address).values():
            cache.add(key, 0, self.window + 5)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr: count it in a fresh key
                cache.add(key, 1, self.window + 5)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


throttle = Throttle()


def client_address(request: Any) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class ThrottledAuthenticationForm(AuthenticationForm):
    throttled = ""  # the message, when this login was refused for too many failures

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        address = client_address(self.request)
        kind, seconds = throttle.wait(username, address)
        if seconds:
            what = "this account" if kind == "account" else "this address"
            self.throttled = f"Too many failed logins for {what}. Try again in {seconds} s."
            raise ValidationError(self.throttled, code="throttled")
        try:
            return super().clean()
        except ValidationError:
            throttle.failed(username, address)
            raise


class ThrottledLoginView(LoginView):
    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, "throttled"):
            response.status_code = 429
        return response
