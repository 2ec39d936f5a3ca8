"""Object store: storing bytes (evidence images) next to bundles."""

from __future__ import annotations

import hashlib

import pytest

from kibotos.objectstore import LocalObjectStore, ObjectStoreError


def test_put_bytes_stores_and_overwrites(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    first = store.put_bytes(b"abc", "keyframes/s1/000001-sim.png")
    assert first.sha256 == hashlib.sha256(b"abc").hexdigest() and first.size_bytes == 3
    assert store.local_path(first.uri).read_bytes() == b"abc"
    again = store.put_bytes(b"abcd", "keyframes/s1/000001-sim.png")  # a redelivery replaces it
    assert again.uri == first.uri and store.local_path(again.uri).read_bytes() == b"abcd"
    assert not [p for p in (tmp_path / "objects").rglob(".*")]  # no temp files left


@pytest.mark.parametrize("key", ["../escape.png", "/abs.png", "a//b.png", ""])
def test_put_bytes_refuses_unsafe_keys(tmp_path, key):
    with pytest.raises(ObjectStoreError):
        LocalObjectStore(tmp_path).put_bytes(b"x", key)
