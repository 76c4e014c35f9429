"""The training configuration: two dataclasses, and their strict construction from plain dictionaries.

``TrainConfig.from_dict`` rejects unknown keys (naming the valid ones) and ill-typed values (naming the
expected type), so a typo in a YAML file or a ``--key value`` flag fails before any work starts. The
defaults are seed 000's training details: Adam, lr 1e-3 halved after 20 epochs without validation-loss
improvement, epochs of 312 batches of 64, validation loss on a fixed sample of 40,000 patches.

Example:
    >>> config = TrainConfig.from_dict({"model": "p4m_densenet", "data": {"dataset": "synthetic_pcam"}})
    >>> config.lr, config.batch_size, config.batches_per_epoch, config.data.val_samples
    (0.001, 64, 312, 40000)
    >>> TrainConfig.from_dict({"model": "densenet", "learning_rate": 0.1})
    Traceback (most recent call last):
    ...
    ValueError: config: unknown key 'learning_rate'; valid keys: ...
"""

import dataclasses
import logging
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

import yaml

from equipath.data.augment import AUGMENTATIONS

__all__ = ["DataConfig", "TrainConfig", "describe_keys", "field_type", "load_yaml", "read_config_file", "build_config", "check_types",
           "apply_overrides"]

DATASETS = ("pcam", "synthetic_pcam", "segmentation", "synthetic_segmentation", "ocelot")

log = logging.getLogger(__name__)

MAX_BATCH = 65_536  # no model here fits a larger batch on any device; a typo, not a plan
MAX_SEED = 2**32 - 1  # numpy's seed range


def _key(default=dataclasses.MISSING, help: str = "", factory=dataclasses.MISSING):
    """A config field with its one-line ``help`` (what ``--show-config`` and ``train -h`` print)."""
    return field(default=default, default_factory=factory, metadata={"help": help})


def describe_keys(cls=None, prefix: str = "") -> list[tuple[str, object, str]]:
    """``[(dotted key, default, help), ...]`` of every field of ``cls`` (default :class:`TrainConfig`), nested
    dataclasses expanded (``data.root``); a required key's default is ``dataclasses.MISSING``.

    Example:
        >>> [k for k, _, _ in describe_keys()][:3], dict((k, d) for k, d, _ in describe_keys())["data.root"]
        (['model', 'model_kwargs', 'data.dataset'], None)
    """
    cls = cls or TrainConfig
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe_keys(hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((prefix + f.name, _plain(default), f.metadata.get("help", "")))
    return rows


@dataclass(frozen=True)
class DataConfig:
    """Which data to train on, and how.

    Attributes:
        dataset: ``pcam`` (the official h5 files in ``root``), ``synthetic_pcam`` (written to ``root`` by the
            procedural generator when missing), ``segmentation`` (image / mask folders), ``synthetic_segmentation``
            (procedural tiles) or ``ocelot`` (OCELOT 2023 cell masks). Defaults to ``synthetic_pcam``.
        root: the data folder; for synthetic sets, where they are written. Defaults to ``<out_dir>/data``.
        synthetic_size: items per split of a synthetic set, ``{"train": n, "valid": n, "test": n}``.
        fraction: data regime, the nested seeded fraction of the training set (1, 0.5, 0.25, 0.125, ...).
            Defaults to 1.
        regime_seed: seed of the regime subsets. Defaults to 0.
        augment: augmentations of the training set, in order, from ``d4``, ``c4``, ``elastic``, ``noise``,
            ``hed``, ``color`` (:mod:`equipath.data.augment`; image and mask alike). Defaults to none (the
            equivariant models need none).
        val_samples: size of the fixed validation sample (seed 000: 40,000); ``None`` for the whole split.
        num_workers: data-loader worker processes. Defaults to 0.
        patch_size: side of the segmentation patches sampled from tiles. Defaults to 320 (seed 001).
        cell_radius: disk radius of the OCELOT cell masks in pixels. Defaults to 30 (seed 002).
        cell_target: the OCELOT training target: ``disk`` (class masks of discs of ``cell_radius``, seed
            002's) or ``gaussian`` (one soft heatmap per cell class, ``exp(-d^2 / (2 cell_sigma^2))``, trained
            with the ``heatmap_mse`` loss). Defaults to ``disk``.
        cell_sigma: width of the Gaussian cell target in pixels. Defaults to 5.
        mask_suffix: the mask of ``images/NAME.png`` is ``masks/NAME{mask_suffix}.png``. Defaults to ``""``.
        valid_fraction: without a ``valid/`` folder, this seeded fraction of ``train/`` images validates.
            Defaults to None (``valid/`` is required).
        grey_to_rgb: greyscale images are repeated to 3 channels instead of refused. Defaults to False.
        stain: stain normalisation to a reference image, ``{"method": "macenko" | "reinhard", "reference":
            PATH}`` (:mod:`equipath.data.stain`): fitted once on the reference, applied to every training and
            validation image before augmentation, and saved in the checkpoint under ``"stain"`` so that
            ``predict`` / ``predict-slide`` apply the same. Defaults to None (no normalisation).

    Every field carries a one-line ``help`` in its metadata (``equipath train --show-config`` prints them).
    """

    dataset: Literal[DATASETS] = _key("synthetic_pcam", "which data set: pcam, synthetic_pcam, segmentation, "
                                                        "synthetic_segmentation or ocelot")
    root: str | None = _key(None, "the data folder (docs/data.md); synthetic sets are written there, default out_dir/data")
    synthetic_size: dict = _key(factory=lambda: {"train": 4096, "valid": 512, "test": 512},
                                help="items per split of a synthetic set")
    fraction: float = _key(1.0, "data regime: the nested seeded fraction of the training set (1, 0.5, 0.25, ...)")
    regime_seed: int = _key(0, "seed of the data-regime subsets")
    augment: tuple[str, ...] = _key(factory=tuple, help="training augmentations in order: d4, c4, elastic, noise, "
                                                        "hed, color (image and mask alike)")
    val_samples: int | None = _key(40000, "size of the fixed validation sample; null for the whole split")
    num_workers: int = _key(0, "data-loader worker processes")
    patch_size: int = _key(320, "side of the segmentation patches sampled from the images")
    cell_radius: int = _key(30, "disk radius of OCELOT cell masks in pixels")
    cell_target: Literal["disk", "gaussian"] = _key("disk", "OCELOT target: disk (class masks of cell_radius) or "
                                                            "gaussian (heatmaps of cell_sigma, loss heatmap_mse)")
    cell_sigma: float = _key(5.0, "width in pixels of the gaussian OCELOT cell target")
    mask_suffix: str = _key("", "segmentation: the mask of image NAME.png is masks/NAME{mask_suffix}.png, "
                                "e.g. _mask")
    valid_fraction: float | None = _key(None, "segmentation: hold out this fraction of train/ for validation "
                                              "when there is no valid/ folder (seeded by regime_seed)")
    grey_to_rgb: bool = _key(False, "segmentation: accept greyscale images, repeating the channel 3 times")
    stain: dict | None = _key(None, "stain normalisation {method: macenko|reinhard, reference: IMAGE}, fitted on "
                                    "the reference, saved in the checkpoint; null: none")

    def __post_init__(self):
        _check_range("data.fraction", self.fraction, 1e-6, 1.0)
        _check_range("data.val_samples", self.val_samples, 1, 10**9)
        _check_range("data.num_workers", self.num_workers, 0, 10**6)
        _check_range("data.patch_size", self.patch_size, 8, 16_384)
        _check_range("data.cell_radius", self.cell_radius, 1, 10_000)
        _check_range("data.cell_sigma", self.cell_sigma, 0.1, 10_000)
        if self.cell_target != "disk" and self.dataset != "ocelot":
            raise ValueError(f"config: data.cell_target {self.cell_target!r} is for data.dataset ocelot, "
                             f"not {self.dataset!r}")
        _check_range("data.regime_seed", self.regime_seed, 0, MAX_SEED)
        for split, size in self.synthetic_size.items():
            if split not in ("train", "valid", "test"):
                raise ValueError(f"config: data.synthetic_size: unknown split {split!r}; expected train, valid, test")
            if isinstance(size, bool) or not isinstance(size, int):
                raise ValueError(f"config: data.synthetic_size.{split} must be an integer, got {size!r}")
            _check_range(f"data.synthetic_size.{split}", size, 1, 10**7)
        cores = os.cpu_count() or 1
        if self.num_workers > cores:
            log.warning("config: data.num_workers %d is more than the %d CPU cores; using %d", self.num_workers,
                        cores, cores)
            object.__setattr__(self, "num_workers", cores)
        if self.valid_fraction is not None and not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"config: data.valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if self.stain is not None:
            _check_stain(self.stain)
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"config: data.augment: unknown augmentation {unknown[0]!r}; "
                             f"expected a list of {', '.join(AUGMENTATIONS)}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, loss, optimisation, and where the outputs go.

    Attributes:
        model: registered model name (``equipath models`` lists them).
        model_kwargs: keyword arguments of ``create_model``. Defaults to none.
        data: a :class:`DataConfig`.
        loss: ``bce``, ``ce``, ``dice_ce`` or ``heatmap_mse`` (the gaussian cell target's); ``None`` picks
            ``bce`` for classifiers, ``heatmap_mse`` for ``data.cell_target: gaussian`` and ``ce`` otherwise.
        dice_weight, ce_weight: weights of Dice-CE (seed 002). Default to 1.
        lr: Adam's initial learning rate. Defaults to 1e-3.
        weight_decay: Adam's weight decay. Defaults to 0.
        lr_patience: the learning rate is multiplied by ``lr_factor`` at the end of the ``lr_patience``-th
            consecutive epoch without a lower validation loss. Defaults to 20 (seed 000).
        lr_factor: Defaults to 0.5.
        epochs: number of epochs. Defaults to 100.
        batch_size: global batch size, split evenly over distributed ranks. Defaults to 64.
        batches_per_epoch: batches per epoch drawn at random; ``None`` for one pass over the training set.
            Defaults to 312 (seed 000).
        eval_batch_size: batch size of validation. Defaults to 128.
        normalization_mean, normalization_std: per-channel statistics of float RGB in [0, 1] applied before
            the model; ``None`` estimates them from up to 2048 training images. Default to None.
        seed: seeds model initialisation, sampling and augmentation. Defaults to 0.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. Defaults to ``auto``.
        amp: bf16 autocast and channels-last on a GPU (ignored on the CPU). Defaults to True.
        out_dir: output folder (checkpoints, metrics.csv, config.yaml). Defaults to ``runs/train``.
        resume: continue the run in ``out_dir`` when its ``last.pt`` exists; with False an existing run
            there is an error. Defaults to True.
        init_from: a checkpoint whose weights start the run (fine-tuning, seed 000 section 3.3), and whose
            normalisation it keeps unless ``normalization_mean`` / ``_std`` are given; ignored when the run
            resumes from its own ``last.pt``. Defaults to None (random initialisation).
        progress: show progress bars. Defaults to True.
    """

    model: str = _key(help="registered model name (equipath models lists them)")
    model_kwargs: dict = _key(factory=dict, help="keyword arguments of the model, e.g. {growth: 8} (docs/models.md)")
    data: DataConfig = _key(factory=DataConfig, help="the data (the data.* keys)")
    loss: Literal["bce", "ce", "dice_ce", "heatmap_mse"] | None = _key(
        None, "bce, ce, dice_ce or heatmap_mse; null: bce for classifiers, heatmap_mse for the gaussian cell "
              "target, ce otherwise")
    dice_weight: float = _key(1.0, "weight of the Dice term of dice_ce")
    ce_weight: float = _key(1.0, "weight of the cross-entropy term of dice_ce")
    lr: float = _key(1e-3, "Adam's initial learning rate")
    weight_decay: float = _key(0.0, "Adam's weight decay")
    lr_patience: int = _key(20, "epochs without a lower validation loss before the learning rate is cut")
    lr_factor: float = _key(0.5, "the learning rate's factor at each cut")
    epochs: int = _key(100, "number of epochs")
    batch_size: int = _key(64, "global batch size, split over distributed ranks")
    batches_per_epoch: int | None = _key(312, "batches per epoch, drawn at random; null for one pass over the data")
    eval_batch_size: int = _key(128, "batch size of validation")
    normalization_mean: tuple[float, float, float] | None = _key(None, "per-channel mean of RGB in [0, 1]; null "
                                                                       "estimates it from the training images")
    normalization_std: tuple[float, float, float] | None = _key(None, "per-channel std of RGB in [0, 1]; null "
                                                                      "estimates it")
    seed: int = _key(0, "seed of initialisation, sampling and augmentation")
    device: str = _key("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    amp: bool = _key(True, "bf16 autocast and channels-last on a GPU (ignored on the CPU)")
    out_dir: str = _key("runs/train", "output folder: checkpoints, metrics.csv, config.yaml")
    resume: bool = _key(True, "continue the run in out_dir when its last.pt exists (false: that is an error)")
    progress: bool = _key(True, "show progress bars")
    init_from: str | None = _key(None, "checkpoint whose weights start the run (fine-tuning); null: random init")

    def __post_init__(self):
        _check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        _check_range("lr_factor", self.lr_factor, 0.0, 1.0, low_open=True)
        for name in ("weight_decay", "dice_weight", "ce_weight"):
            _check_range(name, getattr(self, name), 0.0, 1e6)
        for name, high in (("epochs", 10**6), ("batch_size", MAX_BATCH), ("batches_per_epoch", 10**8),
                           ("eval_batch_size", MAX_BATCH), ("lr_patience", 10**6)):
            _check_range(name, getattr(self, name), 1, high)
        _check_range("seed", self.seed, 0, MAX_SEED)
        for k, value in enumerate(self.normalization_mean or ()):
            _check_range(f"normalization_mean[{k}]", value, -1e3, 1e3)
        for k, value in enumerate(self.normalization_std or ()):
            _check_range(f"normalization_std[{k}]", value, 1e-6, 1e3)
        for key, value in self.model_kwargs.items():
            _check_plain(f"model_kwargs.{key}", value)
        gaussian = self.data.cell_target == "gaussian"
        if (gaussian and self.loss not in (None, "heatmap_mse")) or (self.loss == "heatmap_mse" and not gaussian):
            raise ValueError(f"config: loss {self.loss!r} does not fit data.cell_target {self.data.cell_target!r}; "
                             "the gaussian target trains with heatmap_mse (or loss null), the disk target with "
                             "bce, ce or dice_ce")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build a config from a plain dict (``data`` a nested dict), rejecting unknown keys and wrong types."""
        return _build(cls, values, "")

    def to_dict(self) -> dict:
        """Plain types only (tuples as lists), so the dict can be written as YAML and read back by ``from_dict``."""
        return _plain(dataclasses.asdict(self))


def _check_stain(stain: dict) -> None:
    """``data.stain`` is ``{method: macenko|reinhard, reference: PATH}``; ``ValueError`` naming what is wrong."""
    from equipath.data.stain import STAIN_METHODS

    if set(stain) != {"method", "reference"}:
        raise ValueError(f"config: data.stain must have exactly the keys method and reference, got "
                         f"{', '.join(map(str, stain)) or 'none'}")
    if stain["method"] not in STAIN_METHODS:
        raise ValueError(f"config: data.stain.method must be one of {', '.join(STAIN_METHODS)}, "
                         f"got {stain['method']!r}")
    if not isinstance(stain["reference"], str) or not stain["reference"]:
        raise ValueError(f"config: data.stain.reference must be the path of an image, got {stain['reference']!r}")


def _check_range(name: str, value, low, high, low_open: bool = False) -> None:
    """``ValueError`` naming the key unless ``value`` (None passes) is finite and in ``[low, high]``
    (``(low, high]`` with ``low_open``)."""
    if value is None:
        return
    if not (math.isfinite(value) and low <= value <= high) or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{_number(low)}, {_number(high)}]"
        kind = "an integer" if isinstance(value, int) else "a finite number"
        raise ValueError(f"config: {name} must be {kind} in {interval}, got {value!r}")


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"


def _check_plain(name: str, value, depth: int = 0) -> None:
    """Model arguments are plain YAML scalars or lists of them (finite numbers), a few levels deep."""
    if depth > 4:
        raise ValueError(f"config: {name} is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config: {name} must be finite, got {value!r}")
    if isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            _check_plain(f"{name}[{k}]", item, depth + 1)
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise ValueError(f"config: {name} must be a number, string, true/false, null or a list of them, "
                         f"got a {type(value).__name__}")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def field_type(cls, dotted: str):
    """The annotated type of a (dotted, e.g. ``data.root``) config key; ``KeyError`` naming it if unknown."""
    head, _, rest = dotted.partition(".")
    hints = typing.get_type_hints(cls)
    if head not in hints:
        raise KeyError(f"unknown config key {dotted!r}; valid keys: {', '.join(hints)}")
    if rest:
        if not dataclasses.is_dataclass(hints[head]):
            raise KeyError(f"config key {head!r} has no sub-keys (got {dotted!r})")
        return field_type(hints[head], rest)
    return hints[head]


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list, each {_describe(args[0])}"
        return f"a list of {len(args)} numbers"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string",
            dict: "a mapping"}.get(tp, str(tp))


def _convert(tp, value, where: str):
    """``value`` as type ``tp``, or ``None`` when it does not fit (ints fit floats; bools fit only bools)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value if value in typing.get_args(tp) else None
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None if type(None) not in typing.get_args(tp) else _NONE
        for arg in typing.get_args(tp):
            if arg is not type(None):
                converted = _convert(arg, value, where)
                if converted is not None:
                    return converted
        return None
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return None
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return None
        converted = [_convert(a, v, where) for a, v in zip(items, value)]
        return None if any(c is None for c in converted) else tuple(converted)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".") if isinstance(value, dict) else None
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            return None
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if tp in (bool, str, dict):
        return value if isinstance(value, tp) else None
    raise TypeError(f"config: no conversion for type {tp}")


_NONE = object()  # a converted ``None`` (distinct from "does not fit")


def _build(cls, values, prefix: str):
    if not isinstance(values, dict):
        raise ValueError(f"config: {prefix.rstrip('.') or 'the config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ValueError(f"config: unknown key {prefix + str(key)!r}; valid keys: "
                             + ", ".join(prefix + k for k in hints))
        converted = _convert(hints[key], value, prefix + key)
        if converted is None:
            raise ValueError(f"config: {prefix + key} must be {_describe(hints[key])}, got {_short(value)}")
        kwargs[key] = None if converted is _NONE else converted
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"config: missing required key(s) {', '.join(prefix + m for m in missing)}")
    return cls(**kwargs)


def build_config(cls, values, prefix: str = ""):
    """The dataclass ``cls`` built from a plain dict (nested dicts for nested dataclasses), rejecting unknown
    keys (naming the valid ones), missing required keys and ill-typed values (naming the expected type).
    Every config of the package (training, cells, demo) is built by this one function."""
    return _build(cls, values, prefix)


MAX_YAML_DEPTH = 32


def check_types(obj, where: str = "config") -> None:
    """Check the fields of a config dataclass built in Python (``Config(epochs=3)``) by the rules of
    :func:`build_config`, converting ints given for floats and lists for tuples in place; ``ValueError``
    ``"{where}: {field} must be {type}, got {value!r}"``. Call it first in ``__post_init__``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(value, tp):
            continue
        converted = _convert(tp, value, f.name)
        if converted is None:
            raise ValueError(f"{where}: {f.name} must be {_describe(tp)}, got {value!r}")
        object.__setattr__(obj, f.name, None if converted is _NONE else converted)


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats (``1e-3`` is a number; PyYAML's YAML 1.1 reads it as a string), and
    refusing what no config needs: aliases (``*name``: a few lines of them expand to billions of nodes),
    duplicate keys (the last one would silently win) and nesting deeper than :data:`MAX_YAML_DEPTH`."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed "
                                              f"(line {event.start_mark.line + 1})")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep "
                                                  f"(line {self.peek_event().start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} "
                                                        f"(line {key_node.start_mark.line + 1})")
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
               |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
               |\.[0-9_]+(?:[eE][-+][0-9]+)?
               |[-+]?\.(?:inf|Inf|INF)
               |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str, source: str):
    """Parse YAML text; ``ValueError`` naming ``source`` when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None


def read_config_file(path) -> dict:
    """The mapping of config keys in a YAML file, or in the config shipped in the package under that name
    (:func:`equipath.configs.resolve_config_path`; empty file: ``{}``); ``FileNotFoundError`` / ``ValueError``
    naming the file when it is missing, not YAML or not a mapping."""
    from equipath.configs import resolve_config_path

    path = resolve_config_path(path)
    values = load_yaml(path.read_text(), str(path)) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def _key_type(cls, key: str, prefix: str = ""):
    """The annotated type of the dotted ``key`` of ``cls``; keys inside a ``dict`` field are ``dict``."""
    head, _, rest = key.partition(".")
    hints = typing.get_type_hints(cls)
    if head not in hints:
        raise ValueError(f"unknown config key {prefix + head!r}; valid keys: {', '.join(prefix + k for k in hints)}")
    tp = hints[head]
    if not rest:
        return tp
    if dataclasses.is_dataclass(tp):
        return _key_type(tp, rest, prefix + head + ".")
    if tp is dict:
        return dict
    raise ValueError(f"config key {prefix + head!r} has no sub-keys")


def _override_value(cls, key: str, text: str):
    """The value of ``--set key=text``: raw text for string keys, YAML for the rest (a comma list for lists);
    keys inside a ``dict`` field (``model_kwargs.growth``) are YAML."""
    try:
        tp = _key_type(cls, key)
    except ValueError as exc:
        raise ValueError(f"--set {key}: {exc}") from None
    members = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    if str in members and text not in ("null", "~"):
        return text
    if any(typing.get_origin(m) is tuple for m in members) and not text.lstrip().startswith("["):
        return [load_yaml(part, f"--set {key}") for part in text.split(",") if part.strip()]
    return load_yaml(text, f"--set {key}")


def apply_overrides(values: dict, overrides: dict, cls) -> dict:
    """``values`` with each ``{dotted_key: text}`` of ``--set KEY=VALUE`` set in it, typed by ``cls``'s fields
    (``ValueError`` naming the key when it is unknown or a parent is not a mapping). Returns ``values``."""
    for key, text in overrides.items():
        value = _override_value(cls, key, text)
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part} is not a mapping in the config")
        node[leaf] = value
    return values
