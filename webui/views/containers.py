"""Views of the containers pages. URL patterns are listed here and included by webui/urls.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.http import require_GET


@require_GET
def container_list(request: HttpRequest) -> HttpResponse:
    return render(request, "containers/list.html", {"nav": "containers"})


urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/", container_list, name="ui-containers"),
]
