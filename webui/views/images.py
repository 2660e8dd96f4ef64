"""Views of the images pages. URL patterns are listed here and included by webui/urls.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.http import require_GET


@require_GET
def image_list(request: HttpRequest) -> HttpResponse:
    return render(request, "images/list.html", {"nav": "images"})


urlpatterns: list[URLPattern | URLResolver] = [
    path("images/", image_list, name="ui-images"),
]
