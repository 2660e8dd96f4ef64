from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from webui.views import pages

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", pages.home, name="ui-home"),
    path("containers/", pages.containers, name="ui-containers"),
    path("images/", pages.images, name="ui-images"),
    path("engine/", pages.engine_page, name="ui-engine"),
    path("engine/status", pages.engine_status, name="ui-engine-status"),
]
