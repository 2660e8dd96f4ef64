"""Settings for the test run: webui.settings with everything pointed at a private temp dir,
including the Redis socket that tests/conftest.py starts a real redis-server on."""

from __future__ import annotations

import os
import tempfile

TEST_TMP = tempfile.mkdtemp(prefix="gantry-test-")
os.environ["GANTRY_WEB_HOME"] = os.path.join(TEST_TMP, "web")
os.environ["GANTRY_SECRET_KEY"] = "test-only-" + "x" * 40
os.environ["GANTRY_REDIS_URL"] = f"unix://{TEST_TMP}/redis.sock"
os.environ["GANTRY_STATIC_ROOT"] = os.environ.get("GANTRY_STATIC_ROOT", "/opt/gantry/static")
os.environ.setdefault("GANTRY_NODE", "testnode")
os.environ.setdefault("GANTRY_RPC_TIMEOUT", "5")

from webui.settings import *  # noqa: E402, F403

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
