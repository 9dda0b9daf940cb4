from shared.checkpoints.preprocessing_match import normalization_kinds, preprocessing_differences
from shared.data.pretraining import NORMALIZATION


def test_spacing_is_compared_within_one_percent():
    manifest = {"spacing": [1.5, 1.5, 1.5]}
    assert preprocessing_differences(manifest, spacing=[1.505, 1.5, 1.5], modalities=None) == []
    assert preprocessing_differences(manifest, spacing=[2.0, 2.0, 2.0], modalities=None) == [
        "spacing: pre-trained at spacing [1.5, 1.5, 1.5] mm, fine-tuned at [2.0, 2.0, 2.0] mm"]
    assert preprocessing_differences(manifest, spacing=None, modalities=None) == []  # "median": not known yet
    assert preprocessing_differences({"spacing": None}, spacing=[2.0, 2.0, 2.0], modalities=None) == []


def test_normalisations_are_compared_by_kind():
    assert normalization_kinds(NORMALIZATION, 2) == ["per-image z-score"] * 2
    assert normalization_kinds(["CTNormalization", "ZScoreNormalization"], 2) == ["CT", "per-image z-score"]
    assert normalization_kinds("ct", 1) == ["CT"]
    assert normalization_kinds(["RescaleTo01Normalization"], 1) is None  # not recognised: not compared
    assert normalization_kinds(None, 1) is None
    manifest = {"normalization": ["ZScoreNormalization", "CTNormalization"]}
    assert preprocessing_differences(manifest, spacing=None, modalities=["MRI", "CT"]) == []
    assert preprocessing_differences(manifest, spacing=None, modalities=["CT", "CT"]) == [
        "normalisation: pre-trained with per-image z-score, CT (clipped and z-scored with the data set's foreground "
        "statistics), fine-tuned with CT (clipped and z-scored with the data set's foreground statistics)"]
