"""Where the web server keeps an uploaded file while it streams it to the engine: a temporary
file with no name (O_TMPFILE), so that a web server killed half-way through an upload leaves
nothing behind. Django's own handler names them (/tmp/tmpXXXX.upload.bin) and only a living
process removes them. Small files stay in memory (MemoryFileUploadHandler, first)."""

from __future__ import annotations

import tempfile
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler


class NamelessUploadedFile(UploadedFile):
    def __init__(
        self,
        name: str,
        content_type: str,
        size: int,
        charset: str | None,
        content_type_extra: dict[str, Any] | None = None,
    ) -> None:
        spool = tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR)  # noqa: SIM115
        super().__init__(spool, name, content_type, size, charset, content_type_extra)


class NamelessFileUploadHandler(FileUploadHandler):
    """Streams an upload into a NamelessUploadedFile."""

    file: NamelessUploadedFile

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.file = NamelessUploadedFile(
            self.file_name or "upload", self.content_type or "", 0, self.charset,
            self.content_type_extra,
        )  # fmt: skip

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.file.write(raw_data)

    def file_complete(self, file_size: int) -> NamelessUploadedFile:
        self.file.seek(0)
        self.file.size = file_size
        return self.file

    def upload_interrupted(self) -> None:
        if hasattr(self, "file"):
            self.file.close()
