"""Streaming a zip while it is written: no Django, no heavy imports."""


class ZipSink:
    """A write-only file for `zipfile` whose bytes a generator hands on (the raw export's zip in
    `annotate.exporting`, the curated export's download in `curation.exporting`)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts
