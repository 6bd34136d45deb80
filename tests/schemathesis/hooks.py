"""schemathesis hooks for xcam's API contract test (loaded through SCHEMATHESIS_HOOKS).

The API document says the upload's `file` part is `application/zip`; no schema can say what a
valid archive holds, so this strategy draws real ones: one to four distinct grayscale PNGs of
32-64 px, sometimes with a text file beside them (skipped by the server). Everything else in
every request still comes from the document.
"""

import io
import struct
import zipfile
import zlib

import schemathesis
from hypothesis import strategies as st


def png(side: int, seed: int) -> bytes:
    """A grayscale PNG whose pattern depends on `seed`."""
    rows = b"".join(
        b"\x00" + bytes((x * 5 + y * 3 + seed * 7) % 256 for x in range(side)) for y in range(side)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@st.composite
def archives(draw) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(draw(st.integers(1, 4))):
            archive.writestr(f"scan_{i}.png", png(draw(st.integers(32, 64)), draw(st.integers(0, 10_000))))
        if draw(st.booleans()):
            archive.writestr("notes.txt", b"not an image")
    return buffer.getvalue()


schemathesis.openapi.media_type("application/zip", archives())
