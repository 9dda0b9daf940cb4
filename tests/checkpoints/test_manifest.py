import json

import pytest
import torch
from tests.checkpoints.checkpoint_cases import dna_encoder, dna_unet

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.manifest import export_encoder
from shared.checkpoints.safe_load import sha256_file
from shared.io.errors import InputError

SETTINGS = dict(
    architecture={"name": "resenc", "preset": "tiny"}, in_channels=1, modality="CT", spacing=(1, 1, 1),
    normalization={"scheme": "ct", "percentiles": [0.5, 99.5]}, method="mae",
    method_settings={"mask_ratio": 0.75, "block_size": 16}, data={"datasets": ["synthetic-chest"], "volumes": 3},
)


def test_export_writes_plain_encoder_state_dict_and_manifest(tmp_path):
    network = dna_unet()
    manifest_path = export_encoder(network, tmp_path / "out", **SETTINGS)
    assert manifest_path == tmp_path / "out" / "encoder.json"
    weights = torch.load(tmp_path / "out" / "encoder.pt", weights_only=True)
    expected = network.encoder.state_dict()
    assert list(weights) == list(expected) and not any(key.startswith("encoder.") for key in weights)
    assert all(torch.equal(weights[key], expected[key]) for key in expected)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format_version"] == 1 and manifest["architecture"] == SETTINGS["architecture"]
    assert manifest["in_channels"] == 1 and manifest["modality"] == "CT" and manifest["spacing"] == [1.0, 1.0, 1.0]
    assert manifest["normalization"] == SETTINGS["normalization"] and manifest["method"] == "mae"
    assert manifest["method_settings"] == SETTINGS["method_settings"] and manifest["data"] == SETTINGS["data"]
    assert manifest["weights"]["file"] == "encoder.pt"
    assert manifest["weights"]["sha256"] == sha256_file(tmp_path / "out" / "encoder.pt")
    assert manifest["weights"]["num_tensors"] == len(expected)
    assert {"torch", "monai", "numpy", "python"} <= set(manifest["versions"]) and manifest["created"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["encoder.json", "encoder.pt"]


@pytest.mark.parametrize("which", ["encoder.json", "encoder.pt", "."])
def test_round_trip_from_manifest_weights_or_folder(tmp_path, which):
    encoder = dna_encoder()
    export_encoder(encoder, tmp_path, **SETTINGS)
    pretrained = load_pretrained(tmp_path / which)
    assert pretrained.manifest["method"] == "mae" and pretrained.stems == {}
    expected = encoder.state_dict()
    assert list(pretrained.state_dict) == list(expected)
    assert all(torch.equal(pretrained.state_dict[key], expected[key]) for key in expected)


def test_stems_round_trip(tmp_path):
    two_channel = dna_encoder(2).stem.state_dict()
    export_encoder(dna_encoder(), tmp_path, stems={"ct": dna_encoder().stem.state_dict(), "mri": two_channel},
                   **SETTINGS)
    pretrained = load_pretrained(tmp_path)
    assert json.loads((tmp_path / "encoder.json").read_text())["stems"]["ids"] == {"ct": 1, "mri": 2}
    assert set(pretrained.stems) == {"ct", "mri"}
    assert all(torch.equal(pretrained.stems["mri"][key], two_channel[key]) for key in two_channel)


def test_changed_weights_are_refused(tmp_path):
    encoder = dna_encoder()
    export_encoder(encoder, tmp_path, **SETTINGS)
    tampered = {key: value.clone() for key, value in encoder.state_dict().items()}
    tampered["stem.convs.0.conv.bias"] += 1
    torch.save(tampered, tmp_path / "encoder.pt")
    with pytest.raises(InputError, match="sha256") as raised:
        load_pretrained(tmp_path / "encoder.json")
    assert raised.value.source == str(tmp_path / "encoder.pt")


def test_unknown_format_lists_understood_formats(tmp_path):
    torch.save({"weights": {"layer.weight": torch.ones(1)}}, tmp_path / "model.pth")
    with pytest.raises(InputError, match="unknown checkpoint format.*nnssl.*MultiTalent"):
        load_pretrained(tmp_path / "model.pth")
    torch.save(dna_encoder().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InputError, match="encoder.json beside it"):
        load_pretrained(tmp_path / "weights.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without encoder.json; understood formats"):
        load_pretrained(tmp_path / "empty")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not an encoder manifest"):
        load_pretrained(tmp_path / "other.json")


def test_pickled_checkpoint_is_refused(tmp_path):
    torch.save({"network_weights": dna_unet().state_dict(), "network": torch.nn.Identity()}, tmp_path / "c.pth")
    with pytest.raises(InputError, match="pickled Python objects"):
        load_pretrained(tmp_path / "c.pth")


def test_architecture_must_be_named(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        export_encoder(dna_encoder(), tmp_path, **{**SETTINGS, "architecture": "resenc"})


def test_aliased_weights_are_saved_once(tmp_path):
    export_encoder(dna_encoder(), tmp_path, **SETTINGS)
    weights = torch.load(tmp_path / "encoder.pt", weights_only=True)
    # DNA registers each conv twice (conv and all_modules.0): one storage, written once
    assert weights["stem.convs.0.conv.weight"].data_ptr() == weights["stem.convs.0.all_modules.0.weight"].data_ptr()


class Killed(Exception):
    pass


def test_same_weights_exported_twice_have_the_same_sha256(tmp_path):
    encoder = dna_encoder()
    export_encoder(encoder, tmp_path / "a", **SETTINGS)
    export_encoder(encoder, tmp_path / "b", **SETTINGS)
    assert sha256_file(tmp_path / "a" / "encoder.pt") == sha256_file(tmp_path / "b" / "encoder.pt")


@pytest.mark.parametrize("with_stems", [False, True])
def test_a_kill_at_any_step_of_an_export_leaves_a_readable_pair(tmp_path, monkeypatch, with_stems):
    """Every rename an export makes is a point where a kill may come: the folder must then hold the
    old encoder or the new one, never new weights beside the old manifest."""
    import os

    old, new = dna_encoder(), dna_encoder()
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.add_(1.0)
    stems = (lambda encoder: {"ct": encoder.stem.state_dict()}) if with_stems else (lambda encoder: None)
    replace, renames = os.replace, []
    monkeypatch.setattr(os, "replace", lambda *args: renames.append(args) or replace(*args))
    export_encoder(new, tmp_path / "count", stems=stems(new), **SETTINGS)
    assert len(renames) >= 2

    for kill_at in range(len(renames)):
        folder = tmp_path / f"killed_at_{kill_at}"
        export_encoder(old, folder, stems=stems(old), **SETTINGS)
        calls = iter(range(len(renames)))

        def replace_or_die(*args):
            if next(calls) == kill_at:
                raise Killed
            return replace(*args)

        monkeypatch.setattr(os, "replace", replace_or_die)
        with pytest.raises(Killed):
            export_encoder(new, folder, stems=stems(new), **SETTINGS)
        monkeypatch.setattr(os, "replace", replace)
        loaded = load_pretrained(folder).state_dict
        key = "stem.convs.0.conv.weight"
        assert any(torch.equal(loaded[key], encoder.state_dict()[key]) for encoder in (old, new)), kill_at

        export_encoder(new, folder, stems=stems(new), **SETTINGS)  # the next export repairs everything
        assert torch.equal(load_pretrained(folder).state_dict[key], new.state_dict()[key])
        expected = ["encoder.json", "encoder.pt"] + (["stems.pt"] if with_stems else [])
        assert sorted(path.name for path in folder.iterdir()) == expected, kill_at


def test_orphaned_temporaries_are_removed_when_an_export_starts(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".encoder.pt.ab12.tmp.pt").write_bytes(b"half")
    (tmp_path / ".encoder.json.cd34.tmp.json").write_text("{")
    export_encoder(dna_encoder(), tmp_path, **SETTINGS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["encoder.json", "encoder.pt"]
