"""The docviewer token format: what the issuer makes, what decode_token and the command accept."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sftpd.downloads.tokens import (
    TOKEN_CHARS,
    TokenIssuer,
    TokenKeyError,
    TokenKeys,
    TokenRefused,
    decode_token,
    generate_key,
    read_keys,
)

NOW = datetime(2026, 9, 15, 12, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=7)
IDS = (1, 41, 2**31, -5, -(2**63), 2**63 - 1)  # every bigint a document id may be


def key_file(tmp_path: Path, *keys: str, name: str = "key") -> Path:
    path = tmp_path / name
    path.write_text("".join(k + "\n" for k in keys))
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return key_file(tmp_path, generate_key())


def refused(keys: TokenKeys, token: str | bytes, now: datetime = NOW) -> str:
    with pytest.raises(TokenRefused) as caught:
        decode_token(keys, token, now)
    return caught.value.reason


def test_each_token_of_a_batch_decodes_to_its_own_document(key: Path) -> None:
    keys = read_keys(key)
    ids = [*IDS, *range(1000, 3000)]
    joined = TokenIssuer(keys, EXPIRES).tokens(
        b"".join(i.to_bytes(8, "big", signed=True) for i in ids))
    assert len(joined) == TOKEN_CHARS * len(ids) == 60 * len(ids)
    tokens = [joined[i:i + TOKEN_CHARS] for i in range(0, len(joined), TOKEN_CHARS)]
    assert len(set(tokens)) == len(tokens)
    for document_id, token in zip(ids, tokens, strict=True):
        said = decode_token(keys, token, NOW)
        assert (said.document_id, said.expires_at) == (document_id, EXPIRES)
        assert decode_token(keys, token.decode("ascii"), NOW).document_id == document_id


def test_the_layout_is_the_documented_one(key: Path) -> None:
    """docs/downloads.md's recipe, followed with another API of the library (Cipher and
    modes.GCM rather than AESGCM), is what a viewer in any language does."""
    raw_key = base64.urlsafe_b64decode(key.read_text().strip())
    token = TokenIssuer(read_keys(key), EXPIRES).token(41)
    assert len(token) == 60 and b"=" not in token
    data = base64.urlsafe_b64decode(token)
    version, nonce, ciphertext, tag = data[:1], data[1:13], data[13:29], data[29:]
    assert version == b"\x01" and len(tag) == 16
    decryptor = Cipher(algorithms.AES(raw_key), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(version)
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    assert int.from_bytes(plaintext[:8], "big", signed=True) == 41
    assert int.from_bytes(plaintext[8:], "big") == int(EXPIRES.timestamp())


def test_tokens_for_one_document_never_repeat_a_nonce(key: Path) -> None:
    issuer = TokenIssuer(read_keys(key), EXPIRES)
    joined = issuer.tokens((7).to_bytes(8, "big") * 5000)
    nonces = {base64.urlsafe_b64decode(joined[i:i + TOKEN_CHARS])[1:13]
              for i in range(0, len(joined), TOKEN_CHARS)}
    assert len(nonces) == 5000


def test_every_altered_character_is_refused(key: Path) -> None:
    keys = read_keys(key)
    token = TokenIssuer(keys, EXPIRES).token(41).decode()
    alphabet = "AQgw_-9z"  # different values in every 6-bit position
    for position in range(len(token)):
        for flipped in alphabet:
            if flipped != token[position]:
                altered = token[:position] + flipped + token[position + 1:]
                assert refused(keys, altered) == "invalid", (position, flipped)


def test_a_token_of_another_key_is_refused_and_rotation_keeps_old_tokens(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    old_token = TokenIssuer(read_keys(key_file(tmp_path, old, name="old")), EXPIRES).token(3)
    assert refused(read_keys(key_file(tmp_path, new, name="new")), old_token) == "invalid"
    rotated = read_keys(key_file(tmp_path, new, old, name="rotated"))
    assert decode_token(rotated, old_token, NOW).document_id == 3
    # The first line encrypts: what the rotated file makes, the new key alone decodes.
    new_token = TokenIssuer(rotated, EXPIRES).token(4)
    assert decode_token(read_keys(tmp_path / "new"), new_token, NOW).document_id == 4
    assert refused(read_keys(tmp_path / "old"), new_token) == "invalid"


def test_a_token_is_refused_from_its_expiry_on(key: Path) -> None:
    keys = read_keys(key)
    token = TokenIssuer(keys, EXPIRES).token(41)
    assert decode_token(keys, token, EXPIRES - timedelta(seconds=1)).document_id == 41
    assert refused(keys, token, EXPIRES) == "expired"
    assert refused(keys, token, EXPIRES + timedelta(days=400)) == "expired"


@pytest.mark.parametrize("hostile", [
    "", "A", "A" * 59, "A" * 61, "A" * 100_000, "A" * 58 + "==", "A" * 59 + "=",
    "A" * 59 + "+", "A" * 59 + "/", " " + "A" * 59, "A" * 59 + "\n", "A" * 59 + "é",
    "A" * 59 + "\x00", b"A" * 59 + b"\xff",
])
def test_hostile_strings_are_refused_as_invalid(key: Path, hostile: str | bytes) -> None:
    assert refused(read_keys(key), hostile) == "invalid"


def test_a_valid_token_with_anything_around_it_is_refused(key: Path) -> None:
    keys = read_keys(key)
    token = TokenIssuer(keys, EXPIRES).token(41)
    for wrapped in (token + b"\n", b"\n" + token, token + b"=", b" " + token, token + b"A"):
        assert refused(keys, wrapped) == "invalid", wrapped


@pytest.mark.parametrize(("content", "words"), [
    (b"", "holds no key"),
    (b"\n \n", "holds no key"),
    (b"c2hvcnQ=\n", "line 1"),  # valid base64, 5 bytes
    (b"A" * 43 + b"=\n" + b"A" * 44 + b"\n", "line 2"),  # 43 chars + '=' is a key; 44 'A' not
    (b"A" * 43 + b"=" + b"\x00\n", "line 1"),
    (b"x" * (64 * 1024 + 1), "larger than"),
])
def test_bad_key_files_are_named_not_echoed(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(TokenKeyError) as caught:
        read_keys(path)
    assert words in str(caught.value)
    assert "AAAA" not in str(caught.value) and "c2hvcnQ" not in str(caught.value)


def test_generate_key_command_prints_a_key_the_decoder_reads(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sftpd", "docviewer-token", "generate-key"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    line = proc.stdout.strip()
    assert len(line) == 44 and line != generate_key()
    keys = read_keys(key_file(tmp_path, line))
    assert decode_token(keys, TokenIssuer(keys, EXPIRES).token(9), NOW).document_id == 9


def test_threads_sharing_an_issuer_each_get_their_own_documents(key: Path) -> None:
    """The issuer reuses its buffers: without its lock two threads' calls mix ids (a token
    opening the other thread's document) and may share a nonce across two plaintexts."""
    keys = read_keys(key)
    issuer = TokenIssuer(keys, EXPIRES)
    failures: list[str] = []

    def work(base: int) -> None:
        ids = list(range(base, base + 500))
        joined = b"".join(i.to_bytes(8, "big") for i in ids)
        for _ in range(40):
            made = issuer.tokens(joined)
            said = [decode_token(keys, made[i:i + TOKEN_CHARS], NOW).document_id
                    for i in range(0, len(made), TOKEN_CHARS)]
            if said != ids:
                failures.append(f"thread {base}: {said[:3]}...")
                return

    threads = [threading.Thread(target=work, args=(base,)) for base in (1000, 2000)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
