import hashlib

import pytest
import yaml

from shared.checkpoints.large_files import fetch_large_files, read_large_files
from shared.io.errors import InputError


def write_bundle(tmp_path, content: bytes, hash_val: str | None):
    source = tmp_path / "server" / "encoder.pt"
    source.parent.mkdir()
    source.write_bytes(content)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    entry = {"path": "models/encoder.pt", "url": source.as_uri(), "hash_type": "sha256"}
    if hash_val is not None:
        entry["hash_val"] = hash_val
    (bundle / "large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))
    return bundle


def test_file_url_is_fetched_and_verified(tmp_path):
    content = b"weights" * 100
    bundle = write_bundle(tmp_path, content, hashlib.sha256(content).hexdigest())
    assert fetch_large_files(bundle) == [bundle / "models" / "encoder.pt"]
    assert (bundle / "models" / "encoder.pt").read_bytes() == content
    assert fetch_large_files(bundle) == [bundle / "models" / "encoder.pt"]  # present and valid: kept


def test_hash_mismatch_is_refused_and_nothing_bad_is_kept(tmp_path):
    bundle = write_bundle(tmp_path, b"tampered", hashlib.sha256(b"original").hexdigest())
    with pytest.raises(InputError, match="sha256"):
        fetch_large_files(bundle)
    assert not (bundle / "models" / "encoder.pt").exists()


def test_existing_bad_file_is_deleted(tmp_path):
    bundle = write_bundle(tmp_path, b"original", hashlib.sha256(b"original").hexdigest())
    (bundle / "models").mkdir()
    (bundle / "models" / "encoder.pt").write_bytes(b"stale")
    with pytest.raises(InputError, match="sha256"):
        fetch_large_files(bundle)
    assert not (bundle / "models" / "encoder.pt").exists()
    assert fetch_large_files(bundle)[0].read_bytes() == b"original"


def test_listing_checks(tmp_path):
    bundle = write_bundle(tmp_path, b"x", None)
    with pytest.raises(InputError, match=r"lacks \['hash_val'\]"):
        read_large_files(bundle)
    (bundle / "large_files.yml").write_text(yaml.safe_dump(
        {"large_files": [{"path": "../outside.pt", "url": "file:///x", "hash_val": "0" * 64}]}))
    with pytest.raises(InputError, match="inside the bundle"):
        read_large_files(bundle)
    with pytest.raises(InputError, match="no such file"):
        read_large_files(tmp_path)
