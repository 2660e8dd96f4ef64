"""What the web owns: who owns which container, and the audit log of who did what."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Ownership(models.Model):
    """A container (by its 64-hex id) belongs to the user who created it, on one node."""

    container_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=128, blank=True)
    node = models.CharField(max_length=64)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="containers"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "node"])]

    def __str__(self) -> str:
        return f"{self.name or self.container_id[:12]} ({self.owner_id})"


class AuditEvent(models.Model):
    """One engine action asked for through the web: who, what, on what, how it ended, how long."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=128, blank=True, db_index=True)
    ok = models.BooleanField(default=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.target}"


class LabRun(models.Model):
    """One go at the lab by one user: which image and container it follows, and when each
    milestone was first reached (a milestone stays reached once it was true)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lab_runs"
    )
    image = models.CharField(max_length=512)
    container_id = models.CharField(max_length=64, blank=True)
    container_name = models.CharField(max_length=128, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    reached = models.JSONField(default=dict, blank=True)  # check id -> ISO time

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"lab of {self.user_id} on {self.image}"
