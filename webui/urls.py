"""URL map. Each area keeps its own patterns next to its views (webui/views/<area>.py):

/images/ ...                     images.py     (pull, list, inspect, remove, credentials)
/containers/, /containers/new    containers.py (list, create, detail, storage tab)
/containers/<id>/files/ ...      files.py      (the explorer)
/containers/<id>/spec/ ...       spec.py       (config.json)
/containers/<id>/run/ ...        run.py        (start/stop/kill/..., logs)
/users/ ...                      users.py      (admins: add, roles, disable, passwords)
/class/ ...                      classroom.py  (instructors: every learner's lab, reset)
/nodes/ ...                      nodes.py      (instructors: the engine nodes, live)
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from webui.login import ThrottledLoginView
from webui.views import pages

urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", pages.home, name="ui-home"),
    path("engine/", pages.engine_page, name="ui-engine"),
    path("engine/status", pages.engine_status, name="ui-engine-status"),
    path("", include("webui.views.images")),
    path("", include("webui.views.containers")),
    path("", include("webui.views.files")),
    path("", include("webui.views.spec")),
    path("", include("webui.views.run")),
    path("", include("webui.views.terminal")),
    path("", include("webui.views.lab")),
    path("", include("webui.views.users")),
    path("", include("webui.views.classroom")),
    path("", include("webui.views.nodes")),
    path("", include("webui.views.network")),
]
