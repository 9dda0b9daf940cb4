"""Loading pre-trained weights into a detector: encoder only (default) or everything, never silently partial.

Every key is accounted for in the ``TransferReport``: transferred, skipped on purpose (a fresh stem,
aliases, the allow-list), missing from the checkpoint, unexpected in it, or of the wrong shape. Any
missing, unexpected or mis-shaped key that the caller did not allow explicitly raises, listing them.

Stems, when the downstream input has another channel count than pre-training (paper, appendix C.2):
``"random"`` keeps the network's fresh stem; ``"replicate"`` repeats a single-channel stem's input
convolution across the new channels scaled by 1/channels (so a volume with identical channels gives
the pre-trained response); ``"matching"`` takes a stem whose channel count matches — the main one or
one of the per-dataset stems (MultiTalent) — and fails if there is none.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shared.checkpoints.manifest import PretrainedEncoder, StateDict, stem_input_channels
from shared.encoders.planning import is_spacing_variant
from shared.io.errors import InputError

logger = logging.getLogger(__name__)

STEM_STRATEGIES = ("random", "replicate", "matching")
MODES = ("encoder", "all")
# DNA's conv/norm wrapper registers the same modules twice (``conv`` and ``all_modules.0``); a
# network without the alias needs only one copy
ALIAS_MARK = ".all_modules."


@dataclass
class TransferReport:
    """What a transfer did, key by key (names as in ``network.state_dict()`` for network keys).

    Attributes:
        transferred_keys: network keys that received pre-trained values.
        skipped_keys: checkpoint keys left out on purpose (random stem, aliases, allow-list).
        missing_keys: network keys the checkpoint lacked (allowed ones included).
        unexpected_keys: checkpoint keys the network lacks (allowed ones included).
        shape_mismatches: ``"key: checkpoint shape vs network shape"`` lines.
        stem: the stem strategy used, and ``stem_source`` the stem taken (``"main"``, an id, or None).
    """

    transferred_keys: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    stem: str = "matching"
    stem_source: str | None = None

    def new_parameters(self, network: nn.Module) -> list[str]:
        """Names of the network's parameters that were not transferred (trained alone during warm-up)."""
        done = set(self.transferred_keys)
        return [name for name, _ in network.named_parameters() if name not in done]


# constructor arguments given per stage: a scalar broadcasts and an isotropic [s, s, s] is s
PER_STAGE_ARGUMENTS = ("strides", "blocks_per_stage", "convs_per_stage", "kernel_sizes")


def architecture_differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Constructor arguments on which two encoder specs disagree, each resolved to the full argument list.

    Strides leave no trace in weight shapes, so this comparison is the only guard against loading an
    encoder into a network that down-samples differently.

    Args:
        found: the manifest's ``architecture``.
        expected: the detector's encoder spec.

    Returns:
        ``"argument: checkpoint X, network Y"`` lines, sorted by argument; empty when they agree.
    """
    found, expected = encoder_arguments(found), encoder_arguments(expected)
    return [f"{key}: checkpoint {found.get(key)!r}, network {expected.get(key)!r}"
            for key in sorted(set(found) | set(expected)) if found.get(key) != expected.get(key)]


def encoder_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """Every constructor argument an encoder spec means: the class defaults, then the preset, then the spec.

    Args:
        spec: ``{"name": ..., "preset": ..., <overrides>}`` as :func:`shared.encoders.presets.build_encoder`
            takes it.

    Returns:
        ``{"name": ..., <argument>: <value>}`` with tuples as lists and per-stage arguments one entry per
        stage; an unknown name or preset is returned as given (the build reports it).
    """
    from shared.encoders.presets import ENCODER_CLASSES, ENCODER_PRESETS

    name, preset = spec.get("name"), spec.get("preset")
    if name not in ENCODER_CLASSES or (preset is not None and preset not in ENCODER_PRESETS[name]):
        return {key: _plain(value) for key, value in spec.items()}
    parameters = inspect.signature(ENCODER_CLASSES[name].__init__).parameters.values()
    arguments = {parameter.name: parameter.default for parameter in parameters
                 if parameter.default is not inspect.Parameter.empty}
    arguments.update(ENCODER_PRESETS[name][preset] if preset is not None else {})
    arguments.update({key: value for key, value in spec.items() if key not in ("name", "preset")})
    arguments = {key: _plain(value) for key, value in arguments.items()}
    stages = len(arguments["features"]) if isinstance(arguments.get("features"), list) else None
    for key in PER_STAGE_ARGUMENTS:
        if key in arguments and stages is not None:
            values = arguments[key] if isinstance(arguments[key], list) else [arguments[key]] * stages
            arguments[key] = [value[0] if isinstance(value, list) and value and len(set(map(repr, value))) == 1
                              else value for value in values]
    return {"name": name, **arguments}


def _plain(value: Any) -> Any:
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value


def check_weights_fit_architecture(pretrained: PretrainedEncoder, *, shown: int = 3) -> None:
    """Raise unless the weights are exactly those of the encoder the manifest declares.

    Builds the declared ``architecture`` for the declared ``in_channels`` and compares keys and shapes
    (the reference network's alias keys, ``.all_modules.``, are ignored when the built encoder has none).

    Args:
        pretrained: weights with our manifest.
        shown: how many keys of each kind of mismatch the message names.

    Raises:
        InputError: naming the file and the first mismatching keys (missing, unexpected, shapes), or
            saying that the declared architecture cannot be built.
    """
    from shared.encoders.presets import build_encoder

    architecture, channels = pretrained.manifest.get("architecture"), pretrained.manifest.get("in_channels")
    try:
        target = build_encoder(architecture, int(channels)).state_dict()
    except (TypeError, ValueError) as error:
        raise InputError(pretrained.source, f"declares an architecture {architecture!r} with in_channels "
                                            f"{channels!r} that cannot be built: {error}") from None
    source = {key: value for key, value in pretrained.state_dict.items()
              if ALIAS_MARK not in key or any(ALIAS_MARK in name for name in target)}
    kinds = {
        "missing": sorted(set(target) - set(source)),
        "unexpected": sorted(set(source) - set(target)),
        "shape": [f"{key} (weights {tuple(source[key].shape)} vs architecture {tuple(target[key].shape)})"
                  for key in sorted(set(source) & set(target)) if source[key].shape != target[key].shape],
    }
    problems = [f"{kind} {len(keys)}: {', '.join(keys[:shown])}{', ...' if len(keys) > shown else ''}"
                for kind, keys in kinds.items() if keys]
    if problems:
        raise InputError(pretrained.source, f"the weights do not fit the declared architecture {architecture!r} "
                                            f"({'; '.join(problems)}); re-export the encoder or fix its manifest")


def _stem_prefixes(encoder: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(encoder, "stem_keys", None) or ("stem.",))


def _in_channels_of(target: StateDict, stem_keys: list[str]) -> int:
    return stem_input_channels({key: target[key] for key in stem_keys})


def _choose_stem(pretrained: PretrainedEncoder, source_stem: StateDict, channels: int) -> tuple[StateDict, str]:
    if source_stem and stem_input_channels(source_stem) == channels:
        return source_stem, "main"
    for stem_id, stem in pretrained.stems.items():
        if stem_input_channels(stem) == channels:
            return stem, stem_id
    offered = [f"main ({stem_input_channels(source_stem)})"] if source_stem else []
    offered += [f"{stem_id} ({stem_input_channels(stem)})" for stem_id, stem in pretrained.stems.items()]
    raise InputError(pretrained.source, f"no pre-trained stem takes {channels} input channel(s) (stems and their "
                                        f"channels: {', '.join(offered) or 'none'}); use stem='random' or "
                                        "stem='replicate'")


def _replicate(source_stem: StateDict, target: StateDict, channels: int, source: str | None) -> StateDict:
    if stem_input_channels(source_stem) != 1:
        raise InputError(source, f"stem='replicate' needs a single-channel stem; this one takes "
                                 f"{stem_input_channels(source_stem)} channels")
    adapted = {}
    for key, value in source_stem.items():
        wanted = target.get(key)
        if value.ndim == 5 and value.shape[1] == 1 and wanted is not None and wanted.shape[1] == channels:
            value = value.repeat(1, channels, 1, 1, 1) / channels
        adapted[key] = value
    return adapted


def _stem_by_id(pretrained: PretrainedEncoder, stem_id: str, prefix: str) -> StateDict:
    if stem_id not in pretrained.stems:
        offered = ", ".join(f"{name} ({stem_input_channels(stem)})" for name, stem in pretrained.stems.items())
        raise InputError(pretrained.source, f"has no stem '{stem_id}' (stems and their channels: {offered or 'none'}); "
                                            "pass one of those as stem_id, or none")
    # per-dataset stems are stored relative to the stem; the first prefix is where they belong
    return {prefix + key: value for key, value in pretrained.stems[stem_id].items()}


def _adapt_stem(
    pretrained: PretrainedEncoder, source: StateDict, target: StateDict, prefixes: tuple[str, ...], strategy: str,
    stem_id: str | None = None,
) -> tuple[StateDict, list[str], list[str], str | None]:
    """Applies the stem strategy; returns (source without/with adapted stem, skipped, excused, stem source)."""
    def in_stem(key: str) -> bool:
        return key.startswith(prefixes)

    source_stem = {key: value for key, value in source.items() if in_stem(key)}
    target_stem_keys = [key for key in target if in_stem(key)]
    rest = {key: value for key, value in source.items() if not in_stem(key)}
    if strategy == "random" or not target_stem_keys:
        return rest, sorted(source_stem), target_stem_keys, None
    channels = _in_channels_of(target, target_stem_keys)
    if stem_id is not None:
        chosen = _stem_by_id(pretrained, stem_id, prefixes[0])
        found = stem_input_channels(chosen)
        if strategy == "matching" and found != channels:
            raise InputError(pretrained.source, f"stem '{stem_id}' takes {found} input channel(s), the network "
                                                f"{channels}; choose a stem_id with {channels}, stem='replicate' "
                                                "(single-channel stems) or stem='random'")
        if found != channels:
            chosen = _replicate(chosen, target, channels, pretrained.source)
        return {**rest, **chosen}, [], [], stem_id
    if not source_stem and not pretrained.stems:
        raise InputError(pretrained.source, f"holds no stem weights (keys starting with {list(prefixes)}); "
                                            "use stem='random'")
    if strategy == "replicate":
        if source_stem and stem_input_channels(source_stem) == channels:
            return {**rest, **source_stem}, [], [], "main"
        return {**rest, **_replicate(source_stem, target, channels, pretrained.source)}, [], [], "main"
    stem, stem_id = _choose_stem(pretrained, source_stem, channels)
    if stem_id != "main":
        # per-dataset stems are stored relative to the stem; the first prefix is where they belong
        stem = {prefixes[0] + key: value for key, value in stem.items()}
    return {**rest, **stem}, [], [], stem_id


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def transfer_encoder(
    network: nn.Module,
    pretrained: PretrainedEncoder,
    *,
    mode: str = "encoder",
    stem: str = "matching",
    allow_missing: Sequence[str] = (),
    expected_architecture: dict[str, Any] | None = None,
    stem_id: str | None = None,
) -> TransferReport:
    """Loads pre-trained weights into ``network.encoder`` (or the whole network) and reports every key.

    Args:
        network: the detector (or any module with an ``encoder``); with mode ``"all"`` any module.
        pretrained: weights from ``load_pretrained``: an encoder, or a whole network (``scope="network"``,
            our trainer's files) of which mode ``"encoder"`` takes the keys under ``network.encoder_prefix``.
        mode: ``"encoder"`` (the paper's default) or ``"all"`` (every key of a whole network's
            checkpoint; an encoder-only checkpoint gives the encoder, the rest stays as initialised).
        stem: ``"matching"`` (default; a stem with the network's channel count), ``"random"`` or
            ``"replicate"``.
        allow_missing: fnmatch patterns of keys (network keys for missing, checkpoint keys for
            unexpected or mis-shaped ones) that may be left out without an error.
        expected_architecture: the network's encoder spec; compared with the manifest's.
        stem_id: take this per-dataset stem (a MultiTalent data set id, ``pretrained.stems``) instead
            of searching by channel count; with ``"matching"`` its channels must be the network's,
            with ``"replicate"`` a single-channel one is replicated; ``"random"`` ignores it.

    Returns:
        The report; ``new_parameters(network)`` lists what the warm-up phase trains.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if stem not in STEM_STRATEGIES:
        raise ValueError(f"stem: expected one of {STEM_STRATEGIES}, got {stem!r}")
    declared = pretrained.manifest.get("architecture")
    if expected_architecture is not None and declared:  # our trainer's files do not declare it
        differences = _excuse_spacing_arms(architecture_differences(declared, expected_architecture),
                                           declared, expected_architecture, pretrained.source)
        if differences:
            raise InputError(pretrained.source, "architecture of the pre-trained encoder differs from the network's "
                                                f"encoder: {'; '.join(differences)}")
    if pretrained.scope == "encoder":
        mode = "encoder"  # the encoder is everything such a checkpoint holds
    elif mode == "encoder":
        pretrained = encoder_part(pretrained, getattr(network, "encoder_prefix", "encoder."))
    target_module = network.encoder if mode == "encoder" else network
    prefix = getattr(network, "encoder_prefix", "encoder.") if mode == "encoder" else ""
    prefixes = _stem_prefixes(getattr(network, "encoder", network))
    if mode == "all":
        prefixes = tuple(getattr(network, "encoder_prefix", "encoder.") + p for p in prefixes)
    target = target_module.state_dict()
    source = dict(pretrained.state_dict)
    report = TransferReport(stem=stem)
    if not any(ALIAS_MARK in key for key in target):
        report.skipped_keys += sorted(key for key in source if ALIAS_MARK in key)
        source = {key: value for key, value in source.items() if ALIAS_MARK not in key}
    source, skipped, excused, report.stem_source = _adapt_stem(pretrained, source, target, prefixes, stem, stem_id)
    report.skipped_keys += skipped
    _compare(source, target, set(excused), allow_missing, report, prefix, pretrained.source)
    _load(target_module, target, source, report, prefix)
    return report


def _excuse_spacing_arms(differences: list[str], declared: dict[str, Any], expected: dict[str, Any],
                         origin: str | None) -> list[str]:
    """Drops stride and kernel differences between the two spacing arms of one encoder, with a warning.

    An encoder pre-trained at 1 mm isotropic may be fine-tuned with the strides planned for a data set's
    anisotropic median spacing (and back): the weights fit wherever the kernels have the same shape,
    which the key-by-key shape check then enforces, naming each mismatching key.
    """
    arms = {"strides", "kernel_sizes"}
    named = {line.split(":", 1)[0] for line in differences}
    if not named & arms or named - arms:
        return differences
    found, wanted = encoder_arguments(declared), encoder_arguments(expected)
    if not is_spacing_variant(found.get("strides", []), wanted.get("strides", [])):
        return differences
    logger.warning("%s: pre-trained for other strides/kernels (%s); transferring between spacing arms where the "
                   "kernel shapes agree", origin, "; ".join(differences))
    return []


def _compare(source: StateDict, target: StateDict, excused: set[str], allow: Sequence[str],
             report: TransferReport, prefix: str, origin: str | None) -> None:
    refused: list[str] = []
    for key, value in sorted(source.items()):
        if key not in target:
            report.unexpected_keys.append(key)
            refused += [] if _matches(key, allow) else [f"unexpected {key}"]
        elif tuple(value.shape) != tuple(target[key].shape):
            line = f"{key}: checkpoint {tuple(value.shape)} vs network {tuple(target[key].shape)}"
            report.shape_mismatches.append(line)
            refused += [] if _matches(key, allow) else [f"shape {line}"]
        else:
            report.transferred_keys.append(prefix + key)
    for key in sorted(set(target) - set(source) - excused):
        report.missing_keys.append(prefix + key)
        refused += [] if _matches(prefix + key, allow) or _matches(key, allow) else [f"missing {prefix + key}"]
    if refused:
        shown = "; ".join(refused[:20]) + (f"; ... ({len(refused)} in all)" if len(refused) > 20 else "")
        raise InputError(origin, f"refusing a partial load of pre-trained weights: {shown}. If this is intended, "
                               "pass the keys (fnmatch patterns) in allow_missing")


def encoder_part(pretrained: PretrainedEncoder, prefix: str) -> PretrainedEncoder:
    """The encoder inside a whole network's weights: the keys under ``prefix``, without it."""
    state_dict = {key[len(prefix):]: value for key, value in pretrained.state_dict.items() if key.startswith(prefix)}
    if not state_dict:
        raise InputError(pretrained.source, f"holds no encoder weights (no key starts with '{prefix}')")
    return PretrainedEncoder(state_dict, pretrained.manifest, pretrained.stems, pretrained.source, scope="encoder")


def _load(module: nn.Module, target: StateDict, source: StateDict, report: TransferReport, prefix: str) -> None:
    merged = dict(target)
    for name in report.transferred_keys:
        key = name[len(prefix):]
        merged[key] = source[key].to(dtype=target[key].dtype, device=target[key].device)
    with torch.no_grad():
        module.load_state_dict(merged, strict=True)
