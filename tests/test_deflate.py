"""exporter.deflate: pieces deflated apart and laid end to end are one valid gzip member."""

from __future__ import annotations

import gzip
import zlib

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.deflate import Deflated, crc32_combine, deflate, gzip_stream

chunks = st.binary(max_size=3000) | st.builds(
    lambda n: b'sample{a="b"} 1.0\n' * n, st.integers(0, 5000)
)
pieces = st.lists(st.tuples(st.booleans(), chunks), max_size=8)


@settings(max_examples=200, deadline=None)
@given(first=st.binary(max_size=5000), second=st.binary(max_size=3_000_000))
def test_crc32_combine_is_the_crc_of_both(first: bytes, second: bytes) -> None:
    combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(first + second)


@settings(max_examples=200, deadline=None)
@given(parts=pieces)
def test_any_mix_of_plain_and_deflated_pieces_is_one_gzip_member(
    parts: list[tuple[bool, bytes]],
) -> None:
    given_pieces = [deflate(data) if deflated else data for deflated, data in parts]
    plain = b"".join(data for _, data in parts)
    body = gzip_stream(given_pieces)
    assert gzip.decompress(body) == plain  # checks the CRC-32 and the length too
    # one member, nothing after it: a client that reads only the first member (httpx's
    # decoder, zlib with wbits 31) still gets everything
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(body) == plain
    assert inflater.eof and inflater.unused_data == b""


def test_httpx_reads_the_whole_body() -> None:
    plain = [b"# HELP a b\n", b"x" * 100_000, b"y\n" * 50_000, b"tail\n"]
    body = gzip_stream([plain[0], deflate(plain[1]), deflate(plain[2]), plain[3]])
    response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body)
    assert response.read() == b"".join(plain)


def test_a_deflated_piece_keeps_its_crc_length_and_text() -> None:
    text = b'parqex_door_open{account="home"} 1.0\n' * 1000
    piece = deflate(text)
    assert isinstance(piece, Deflated)
    assert (piece.crc, piece.size, piece.inflate()) == (zlib.crc32(text), len(text), text)
    assert len(piece.data) < len(text) // 10
