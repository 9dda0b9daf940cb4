"""What a detector bundle's training needs before the first step, in one call from its config:
check the network fits the data, run the bundle's ``preprocessing`` chain over the training and
validation splits into the keyed cache, let the detector plan from the training boxes (Retina U-Net:
anchor sizes), and record all of it in ``model_plan.json`` so inference rebuilds exactly the same model
and preprocessing. The data set's plan (spacing, intensity statistics) is made before, by
:func:`shared.data.plan.plan_dataset`, and reaches the chain as transform arguments.

With ``spacing: "median"`` (the paper's "default" arm) the data's spacing is usually anisotropic, and
:func:`plan_encoder` gives the encoder per-axis strides and kernel sizes planned from it
(:mod:`shared.encoders.planning`) before the network is built; the planned spec is recorded in the
model plan's ``"encoder"``.

The model plan also records how the training preprocessed the image (``"image_preprocessing"``: the
description, :func:`shared.data.cache_key.describe_transform`, of each transform of the chain acting on
``"image"``). Inference rebuilds its chain from the plan's values, but a transform a user added to the
training chain by an override file (a CT window) is only there if the same override is given again:
:func:`check_inference_preprocessing` compares the two and refuses a chain that differs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import torch

from shared.bundles.network import network_spec
from shared.data.cache import read_case
from shared.data.cache_key import describe_transform
from shared.data.plan import parse_spacing, plan_dataset
from shared.data.preprocess import Transform, preprocess
from shared.encoders import build_encoder
from shared.encoders.planning import plan_strides_and_kernels
from shared.inference.domain import fingerprint_datalist
from shared.io.atomic import write_json
from shared.io.errors import InputError
from shared.layers.strides import compact, per_axis

MODEL_PLAN = "model_plan.json"
IMAGE_PREPROCESSING = "image_preprocessing"


@dataclass
class DetectionData:
    """The preprocessed data and the model settings derived from it.

    Attributes:
        plan: the data set's plan (spacing, intensity statistics, classes).
        cache_dir: the keyed cache folder holding the preprocessed cases.
        cache_key: the preprocessing chain's key (the folder's name).
        train_cases, validation_cases: case ids in the cache.
        class_names: one name per class.
        patch_size: training and inference tile size.
        detection_strides: the network's detection strides (ints, or one per axis).
        detector: what the detector planned from the training data (``model_plan.json``'s ``"detector"``).
        anchor_sizes: ``detector["anchor_sizes"]`` when the detector planned anchors, else None (also
            written at the model plan's top level, where plans made before ``"detector"`` kept it).
        encoder: the encoder spec the network was built from (``None`` when not given).
    """

    plan: dict[str, Any]
    cache_dir: str
    cache_key: str
    train_cases: list[str]
    validation_cases: list[str]
    class_names: list[str]
    patch_size: list[int]
    detection_strides: list[int | list[int]]
    detector: dict[str, Any]
    anchor_sizes: list[list[float]] | None = None
    encoder: dict[str, Any] | None = None


def plan_encoder(
    encoder: dict[str, Any],
    *,
    datalist: str | os.PathLike,
    cache_dir: str | os.PathLike,
    spacing: str | Sequence[float],
    patch_size: Sequence[int],
    num_workers: int = 0,
) -> dict[str, Any]:
    """The encoder spec for the training spacing: planned per-axis strides and kernels for "median".

    With ``spacing`` "fixed" or explicit mm values the spec comes back unchanged (the presets'
    isotropic strides). With "median" the data set is planned (:func:`shared.data.plan.plan_dataset`,
    once: ``cache_dir/plans.json`` is reused) to learn the median spacing, and the spec gets ``strides`` and
    ``kernel_sizes`` planned nnU-Net-style for it and ``patch_size``; ``strides`` or
    ``kernel_sizes`` written in the spec itself are kept (an explicit choice wins over the plan).

    Raises:
        InputError: naming the datalist, when the patch is too small for the encoder's stages.
    """
    if parse_spacing(spacing)[0] != "median":
        return encoder
    plan = plan_dataset(datalist, cache_dir, spacing=spacing)
    return planned_encoder(encoder, plan["target_spacing"], patch_size, source=datalist)


def planned_encoder(encoder: dict[str, Any], spacing: Sequence[float], patch_size: Sequence[int], *,
                    source: str | os.PathLike | None = None) -> dict[str, Any]:
    """``encoder`` with ``strides`` and ``kernel_sizes`` planned for ``spacing`` (unless the spec sets them).

    Raises:
        InputError: naming ``source``, when ``patch_size`` is too small for the encoder's stages.
    """
    with torch.device("meta"):
        num_stages = len(build_encoder(encoder, 1).feature_info)
    try:
        strides, kernel_sizes = plan_strides_and_kernels(spacing, patch_size, num_stages)
    except ValueError as error:
        raise InputError(source, str(error)) from error
    planned = {"strides": [_json_stride(s) for s in strides], "kernel_sizes": [_json_stride(k) for k in kernel_sizes]}
    return {**planned, **encoder}


def _json_stride(value: int | tuple[int, ...]) -> int | list[int]:
    return value if isinstance(value, int) else list(value)


def prepare_detection_data(
    datalist: str | os.PathLike,
    cache_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    preprocessing: Transform,
    plan: dict[str, Any],
    in_channels: int,
    num_classes: int,
    patch_size: Sequence[int],
    detection_strides: Sequence[int | Sequence[int]],
    network_stride: int | Sequence[int] | None = None,
    encoder: dict[str, Any] | None = None,
    plan_detector: Callable[..., dict[str, Any]] | None = None,
    network: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> DetectionData:
    """Preprocess the training and validation splits with ``preprocessing`` (once; cached under its
    key), let the detector plan, write the model plan.

    ``detection_strides`` are the network's levels (``network.detection_strides``: per axis on an
    anisotropic encoder, so that anchors are fitted per axis); ``encoder`` (the spec the network
    was built from, e.g. :func:`plan_encoder`'s) is recorded in the model plan for inference.

    Args:
        preprocessing: the bundle's ``preprocessing`` chain (see :func:`shared.data.preprocess.preprocess`).
        plan: the data set's plan the chain was built from (:func:`shared.data.plan.plan_dataset`).
        plan_detector: the detector's planning from the training data, ``(boxes (N, 6) xyzxyz voxel,
            detection_strides, *, case_boxes, patch_size) -> dict`` (``case_boxes``: the same boxes per
            training case) recorded as the model plan's ``"detector"`` (Retina U-Net:
            :func:`shared.detectors.planning.plan_retina_unet`); None for a detector that plans nothing
            (then data without boxes is fine).
        network: the network spec (:func:`shared.bundles.network.network_spec`), recorded as ``"network"``.

    Raises:
        InputError: naming the datalist, when its channel or class count differs from the network's,
            the validation split is empty, or the patch size is not a multiple, on each axis, of the
            network's total stride (the encoder's coarsest stride ``network_stride`` when given, which may
            exceed the coarsest detection stride; else the coarsest detection stride).
    """
    _check_patch_size(datalist, patch_size, detection_strides, network_stride)
    if len(plan["channels"]) != in_channels:
        raise InputError(datalist, f"the scans have {len(plan['channels'])} channel(s) but the network expects "
                                   f"{in_channels}: set in_channels={len(plan['channels'])}")
    if plan["num_classes"] != num_classes:
        raise InputError(datalist, f"the data set has {plan['num_classes']} classes {plan['classes']} but the "
                                   f"network predicts {num_classes}: set num_classes={plan['num_classes']}")
    cached = preprocess(datalist, cache_dir, preprocessing, splits=("training", "validation"), num_workers=num_workers)
    train_cases, validation_cases = cached.cases["training"], cached.cases["validation"]
    if not validation_cases:
        raise InputError(datalist, "the 'validation' split is empty: validation picks the best model")
    dims = len(patch_size)
    detector = {}
    if plan_detector is not None:
        try:
            case_boxes = _training_boxes(cached.cache_dir, train_cases)
            pooled = np.concatenate(case_boxes) if case_boxes else np.zeros((0, 6), dtype=np.float32)
            detector = dict(plan_detector(pooled, detection_strides, case_boxes=case_boxes,
                                          patch_size=[int(size) for size in patch_size]))
        except ValueError as error:  # the detector cannot plan from these data: name the datalist
            raise InputError(datalist, str(error)) from error
    data = DetectionData(
        plan=plan, cache_dir=cached.cache_dir, cache_key=cached.key, train_cases=train_cases,
        validation_cases=validation_cases, class_names=list(plan["classes"]),
        patch_size=[int(size) for size in patch_size],
        detection_strides=[_json_stride(compact(per_axis(s, dims, "detection_strides"))) for s in detection_strides],
        detector=detector, anchor_sizes=detector.get("anchor_sizes"), encoder=encoder,
    )
    # no "encoder" key unless one was given: plans of bundles that do not pass it stay as they were
    left_out = ("cache_dir", "train_cases", "validation_cases", *(("encoder",) if encoder is None else ()),
                *(("anchor_sizes",) if data.anchor_sizes is None else ()))
    record = {key: value for key, value in asdict(data).items() if key not in left_out}
    if network is not None:  # the whole network spec (shared.bundles.network): inference rebuilds it from here
        record["network"] = network
    record[IMAGE_PREPROCESSING] = image_preprocessing(preprocessing)
    # what the training scans looked like: inference warns on a scan far outside it (shared.inference.domain)
    record["domain"] = fingerprint_datalist(datalist, [channel["modality"] for channel in plan["channels"]],
                                            cache_dir=cache_dir)
    write_json(Path(output_dir) / MODEL_PLAN, record)
    return data


def _check_patch_size(datalist, patch_size, detection_strides, network_stride) -> None:
    dims = len(patch_size)
    if network_stride is not None:
        totals = [per_axis(network_stride, dims, "network_stride")]
    else:
        totals = [per_axis(stride, dims, "detection_strides") for stride in detection_strides]
    coarsest = tuple(max(axis) for axis in zip(*totals))
    if any(int(size) % stride for size, stride in zip(patch_size, coarsest)):
        named = coarsest[0] if len(set(coarsest)) == 1 else list(coarsest)
        raise InputError(datalist, f"patch_size {list(patch_size)} is not divisible by the network's total "
                                   f"stride {named}: choose multiples of {named} on each axis")


def trained_encoder(model_dir: str | os.PathLike, default: dict[str, Any]) -> dict[str, Any]:
    """The encoder spec a trained model was built from (its model plan's ``"encoder"``), else ``default``.

    Inference rebuilds the network from it, so a model trained with planned per-axis strides runs with
    the plain inference config. ``default`` (the config's ``encoder``) serves models whose plan records
    none and folders without a trained model yet (``verify_net_in_out``, ``ckpt_export``).
    """
    path = Path(model_dir) / MODEL_PLAN
    if not path.is_file():
        return default
    return read_model_plan(path).get("encoder") or default


def read_model_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The model plan written at training: a ``model_plan.json`` or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_PLAN
    if not path.is_file():
        raise InputError(path, "no model plan: train the bundle first (it writes model_plan.json next to "
                               "the weights), or point model_dir at a trained model")
    return json.loads(path.read_text())


def image_preprocessing(preprocessing: Any, *, image_key: str = "image") -> list[Any]:
    """The description of each transform of a chain that acts on ``image_key``, in order (JSON values).

    A transform acts on the image when its ``keys`` hold ``image_key`` (MONAI's ``MapTransform``); one
    without ``keys`` is counted as acting on it. A ``Compose`` is read through.
    """
    described = [describe_transform(transform) for transform in _flattened(preprocessing)
                 if image_key in _transform_keys(transform, image_key)]
    return json.loads(json.dumps(described))  # tuples become lists, as in the model plan's file


def check_inference_preprocessing(model_dir: str | os.PathLike, preprocessing: Any, *,
                                  image_key: str = "image") -> None:
    """Refuse an inference chain that does not preprocess the image as the training did.

    Compares :func:`image_preprocessing` of ``preprocessing`` with the model plan's record. A plan
    written before the record existed is not checked, nor a ``model_dir`` without a plan (reading the
    model reports that, with what to do).

    Raises:
        InputError: naming ``model_plan.json`` and the first transform that differs, when they differ.
    """
    path = Path(model_dir) / MODEL_PLAN if Path(model_dir).is_dir() else Path(model_dir)
    if not path.is_file():
        return
    recorded = read_model_plan(path).get(IMAGE_PREPROCESSING)
    if recorded is None:
        return
    current = image_preprocessing(preprocessing, image_key=image_key)
    if current == recorded:
        return
    index = next((i for i, (a, b) in enumerate(zip(recorded, current)) if a != b), min(len(recorded), len(current)))
    if index >= len(current):
        what = f"the training also ran {_transform_name(recorded[index])} on the {image_key!r}, this chain does not"
    elif index >= len(recorded):
        what = f"this chain runs {_transform_name(current[index])} on the {image_key!r}, the training did not"
    else:
        what = f"transform {index + 1} on the {image_key!r} is {_transform_name(current[index])} here but " \
               f"{_transform_name(recorded[index])} in training{_differing_arguments(recorded[index], current[index])}"
    raise InputError(path, f"the inference preprocessing differs from the training's: {what}; pass the same "
                           "override file(s) as training (e.g. the one adding a CT window) to this command too")


def _flattened(transform: Any) -> list[Any]:
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return [item for child in inner for item in _flattened(child)]
    return [transform]


def _transform_keys(transform: Any, image_key: str) -> tuple[Any, ...]:
    keys = getattr(transform, "keys", None)
    if keys is None or callable(keys):
        return (image_key,)
    return (keys,) if isinstance(keys, str) else tuple(keys)


def _transform_name(description: Any) -> str:
    target = description.get("_target_") if isinstance(description, dict) else None
    return str(target or description).rsplit(".", 1)[-1]


def _differing_arguments(recorded: Any, current: Any) -> str:
    same_class = isinstance(recorded, dict) and isinstance(current, dict) and \
        recorded.get("_target_") == current.get("_target_")
    if not same_class:
        return ""
    return f" ({', '.join(_differing_paths(recorded, current, '')[:3])} differ)"


def _differing_paths(recorded: Any, current: Any, prefix: str) -> list[str]:
    """Dotted paths of the values that differ between two descriptions (the leaves)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return [path for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)
                for path in _differing_paths(recorded.get(key), current.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".") or "the value"]


def record_network(output_dir: str | os.PathLike, network: torch.nn.Module) -> torch.nn.Module:
    """Add ``network``'s spec to the model plan in ``output_dir`` (written by :func:`prepare_detection_data`).

    For a network whose arguments come from the detector's plan (Deformable DETR's ``num_queries``): it
    is built after the data preparation, which therefore cannot record it; inference rebuilds it from here.

    Returns:
        ``network``.
    """
    path = Path(output_dir) / MODEL_PLAN
    write_json(path, {**read_model_plan(path), "network": network_spec(network)})
    return network


def _training_boxes(cache_dir: str | os.PathLike, cases: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(read_case(cache_dir, case).boxes, dtype=np.float32).reshape(-1, 6) for case in cases]
