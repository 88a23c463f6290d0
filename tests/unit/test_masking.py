"""The streaming masker: secrets become **** wherever the chunks were cut, exactly as masking the whole
output at once would, holding back no more than it must."""
from __future__ import annotations

import random

import pytest

from common.masking import StreamMasker, mask_text


def _streamed(masker: StreamMasker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def _cut(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 8)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_a_secret_is_masked_wherever_it_appears():
    assert mask_text("user=admin pw=hunter22 again hunter22", ["hunter22"]) == "user=admin pw=**** again ****"


@pytest.mark.parametrize("cut", range(1, 8))
def test_a_secret_split_across_two_chunks_is_masked(cut):
    text = b"pw=hunter22!"
    start = text.index(b"hunter22")
    masker = StreamMasker(["hunter22"])
    first, second = text[:start + cut], text[start + cut:]
    assert _streamed(masker, [first, second]) == b"pw=****!"


def test_a_secret_split_across_many_chunks_is_masked():
    masker = StreamMasker(["s3cr3t-value"])
    assert _streamed(masker, [bytes([b]) for b in b"<s3cr3t-value>"]) == b"<****>"


def test_only_what_could_start_a_secret_is_held_back():
    masker = StreamMasker(["abcdef", "xy"])
    assert masker.feed(b"0123456789\n") == b"0123456789\n"  # nothing here can begin a secret
    assert masker.feed(b"1 abc") == b"1 "  # "abc" may become "abcdef"
    assert masker.feed(b"x") == b"abcx"[:3]  # "abcx" cannot: out it goes, but "x" may begin "xy"
    assert masker.feed(b"z") == b"xz"
    assert masker.feed(b"abcde") == b""
    assert masker.flush() == b"abcde"
    assert masker.feed(b"abcdefabcdef") == b"********"


def test_held_back_is_at_most_the_longest_secret_minus_one():
    masker = StreamMasker(["aaaaaa"])
    assert masker.feed(b"baaaaa") == b"b"  # five a's could begin the secret
    assert masker.feed(b"aaaaa") == b"****"  # masked; the four a's after it could begin another
    assert masker.flush() == b"aaaa"


def test_nothing_is_held_back_without_secrets():
    masker = StreamMasker([])
    assert not masker.active
    assert masker.feed(b"anything") == b"anything" and masker.flush() == b""
    assert StreamMasker(["", ""]).feed(b"x") == b"x"  # empty values are no secrets


def test_the_longer_of_two_secrets_starting_at_the_same_byte_is_masked_whole():
    assert mask_text("key=abcdefgh", ["abcd", "abcdefgh"]) == "key=****"
    masker = StreamMasker(["abcd", "abcdefgh"])
    assert _streamed(masker, [b"key=abcd", b"efgh"]) == b"key=****"


def test_a_one_character_secret_masks_aggressively():
    assert mask_text("banana", ["a"]) == "b****n****n****"


def test_non_ascii_secrets_and_output_bytes():
    secret = "pässwörd✓"
    data = f"→ {secret} ←".encode()
    masker = StreamMasker([secret])
    cut = data.index("ö".encode()) + 1  # inside a multi-byte character
    assert _streamed(masker, [data[:cut], data[cut:]]) == "→ **** ←".encode()
    assert masker.mask(b"\xff" + secret.encode() + b"\xfe") == b"\xff****\xfe"  # undecodable bytes around it


def test_mask_leaves_the_stream_alone():
    masker = StreamMasker(["secret"])
    assert masker.feed(b"a sec") == b"a "  # "sec" could still become "secret"
    assert masker.mask(b"[note] secret") == b"[note] ****"
    assert masker.feed(b"ret") + masker.flush() == b"****"


@pytest.mark.parametrize("seed", range(200))
def test_streaming_equals_masking_the_whole_output(seed):
    rng = random.Random(seed)
    alphabet = b"abc\n\xc3\xa9"
    secrets = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3))]
    data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
    whole = mask_text(data.decode("utf-8", "surrogateescape"), secrets).encode("utf-8", "surrogateescape")
    assert _streamed(StreamMasker(secrets), _cut(data, rng)) == whole
    for secret in secrets:
        assert secret.encode() not in whole
