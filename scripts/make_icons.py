"""Draw the mobile web's PNG app icons (the shapes of mobile_web/static/icon.svg) with the standard library.

Run after changing the icon: ``python scripts/make_icons.py``. The PNGs are committed, so an
install needs neither this script nor an image library. The square is drawn edge to edge and the
house stays inside the central 80 %, so the same file serves as a maskable icon.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "mobile_web" / "static"
SIZES = (192, 512)
BACKGROUND = (0x14, 0x53, 0x2D)
INK = (0xFF, 0xFF, 0xFF)
STROKE = 4.0  # in the SVG's 64-unit box
# the house outline and its door, as in icon.svg
PATHS = (
    ((14, 46), (14, 22), (32, 12), (50, 22), (50, 46), (14, 46)),
    ((26, 46), (26, 32), (38, 32), (38, 46)),
)
Segment = tuple[tuple[float, float], tuple[float, float]]
SEGMENTS: list[Segment] = [(a, b) for path in PATHS for a, b in itertools.pairwise(path)]


def distance_to_segment(x: float, y: float, segment: Segment) -> float:
    (ax, ay), (bx, by) = segment
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(x - ax - t * dx, y - ay - t * dy)


def coverage(x: float, y: float, pixel: float) -> float:
    """How much of the pixel at (x, y) the strokes cover, with a one-pixel soft edge."""
    nearest = min(distance_to_segment(x, y, segment) for segment in SEGMENTS)
    return max(0.0, min(1.0, 0.5 + (STROKE / 2 - nearest) / pixel))


def render(size: int) -> bytes:
    scale = 64 / size
    rows = bytearray()
    for row in range(size):
        rows.append(0)  # PNG filter type: none
        for column in range(size):
            alpha = coverage((column + 0.5) * scale, (row + 0.5) * scale, scale)
            rows.extend(round(b + (i - b) * alpha) for b, i in zip(BACKGROUND, INK, strict=True))
    return png(size, size, bytes(rows))


def png(width: int, height: int, raw_rgb_rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rgb_rows, 9)) + chunk(
        b"IEND", b"")


def main() -> None:
    for size in SIZES:
        path = STATIC / f"icon-{size}.png"
        path.write_bytes(render(size))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
