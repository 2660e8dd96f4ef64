"""Detach keys as podman has them: found anywhere in the input, split across reads or not,
the bytes before them delivered, a trailing partial match held until the next byte."""

from __future__ import annotations

import pytest

from engine.cli.terminal import DetachScanner, parse_detach_keys
from engine.errors import InvalidInputError

CTRL_P_Q = b"\x10\x11"


def test_keys_followed_by_more_input_in_the_same_read_still_detach() -> None:
    # the race as it was seen: ash's cursor report arrived in the same read after the keys
    assert DetachScanner(CTRL_P_Q).feed(b"\x10\x11\x1b[1;5R") == (b"", True)


def test_bytes_before_the_keys_are_delivered() -> None:
    assert DetachScanner(CTRL_P_Q).feed(b"ls\r\x10\x11") == (b"ls\r", True)


def test_keys_split_across_reads_detach_and_hold_the_partial_match() -> None:
    scanner = DetachScanner(CTRL_P_Q)
    assert scanner.feed(b"abc\x10") == (b"abc", False)
    assert scanner.feed(b"\x11") == (b"", True)


def test_a_partial_match_that_does_not_complete_is_delivered_with_the_next_byte() -> None:
    scanner = DetachScanner(CTRL_P_Q)
    assert scanner.feed(b"\x10") == (b"", False)
    assert scanner.feed(b"x") == (b"\x10x", False)
    assert scanner.feed(b"\x10\x10") == (b"\x10", False)
    assert scanner.feed(b"\x11") == (b"", True)


def test_no_keys_pass_everything() -> None:
    assert DetachScanner(b"").feed(b"\x10\x11") == (b"\x10\x11", False)


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("ctrl-p,ctrl-q", CTRL_P_Q),
        ("ctrl-a,x", b"\x01x"),
        ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x00\x1b\x1c\x1d\x1e\x1f"),
        ("", b""),
    ],
)
def test_podman_spellings(spec: str, keys: bytes) -> None:
    assert parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["ctrl-", "ctrl-pq", "ctrl-1", "abc", "ctrl-p,", ",", "ctrl-P"])
def test_bad_spellings_are_refused_clearly(spec: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid detach keys"):
        parse_detach_keys(spec)
