import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from shared.checkpoints.large_files import (PLACEHOLDER_HASH, check_shipped_file, fetch_large_files, read_large_files,
                                            write_large_file_entry)
from shared.checkpoints.safe_load import read_checkpoint
from shared.checkpoints.weights import load_weights
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


def shipped_bundle(tmp_path, listed: bytes, on_disk: bytes):
    """A bundle shipping ``models/model.pt`` listed with the sha256 of ``listed``, holding ``on_disk``."""
    bundle = tmp_path / "shipped"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(on_disk)
    write_large_file_entry(bundle, "models/model.pt", "bundles/shipped/models/model.pt",
                           hashlib.sha256(listed).hexdigest())
    return bundle


def saved_bytes(tmp_path, state) -> bytes:
    torch.save(state, tmp_path / "state.pt")
    return (tmp_path / "state.pt").read_bytes()


def test_a_shipped_file_whose_sha256_differs_is_refused_and_kept(tmp_path):
    original = saved_bytes(tmp_path, {"weight": torch.ones(3)})
    replaced = saved_bytes(tmp_path, {"weight": torch.zeros(3)})
    bundle = shipped_bundle(tmp_path, original, replaced)
    with pytest.raises(InputError, match="differs from .* lists for this shipped file") as raised:
        read_checkpoint(bundle / "models" / "model.pt")
    assert "\n" not in str(raised.value) and "tools.ship_weights" in str(raised.value)
    with pytest.raises(InputError, match="shipped file"):  # the bundles' strict loader reads through it
        load_weights(torch.nn.Linear(3, 1), bundle / "models" / "model.pt")
    assert (bundle / "models" / "model.pt").read_bytes() == replaced  # perhaps the user's own file: not deleted


def test_a_shipped_file_that_matches_is_read_and_placeholders_are_not_checked(tmp_path):
    original = saved_bytes(tmp_path, {"weight": torch.ones(3)})
    bundle = shipped_bundle(tmp_path, original, original)
    assert torch.equal(read_checkpoint(bundle / "models" / "model.pt")["weight"], torch.ones(3))
    write_large_file_entry(bundle, "models/model.pt", "https://example.invalid/model.pt", PLACEHOLDER_HASH)
    (bundle / "models" / "model.pt").write_bytes(saved_bytes(tmp_path, {"weight": torch.zeros(3)}))
    assert torch.equal(read_checkpoint(bundle / "models" / "model.pt")["weight"], torch.zeros(3))
    check_shipped_file(tmp_path / "state.pt")  # not in a bundle's models/: nothing to check


def test_an_entry_is_created_or_replaced_and_the_others_are_kept(tmp_path):
    bundle = write_bundle(tmp_path, b"weights", hashlib.sha256(b"weights").hexdigest())
    before = read_large_files(bundle)
    write_large_file_entry(bundle, "models/model.pt", "bundles/b/models/model.pt", "A" * 64)
    write_large_file_entry(bundle, "models/model.pt", "bundles/b/models/model.pt", "b" * 64)
    entries = read_large_files(bundle)
    assert entries[0] == before[0]
    assert entries[1:] == [{"path": "models/model.pt", "url": "bundles/b/models/model.pt", "hash_val": "b" * 64,
                            "hash_type": "sha256"}]
    assert (bundle / "large_files.yml").read_text().startswith("# ")


@pytest.mark.parametrize("listing", sorted(Path(__file__).resolve().parents[2].glob("bundles/*/large_files.yml")))
def test_the_repository_listings_are_in_the_written_format(listing, tmp_path):
    # rewriting an entry as it is changes nothing: tools.ship_weights keeps the files' format
    entries = read_large_files(listing.parent)
    copy = tmp_path / "bundle"
    copy.mkdir()
    shutil.copy(listing, copy / "large_files.yml")
    write_large_file_entry(copy, entries[0]["path"], entries[0]["url"], entries[0]["hash_val"])
    assert (copy / "large_files.yml").read_text() == listing.read_text()
    for entry in entries:
        shipped = listing.parent / entry["path"]
        assert shipped.is_file() == (entry["hash_val"] != PLACEHOLDER_HASH), entry
        assert ("example.invalid" in entry["url"]) == (entry["hash_val"] == PLACEHOLDER_HASH), entry
        if shipped.is_file():
            check_shipped_file(shipped)
