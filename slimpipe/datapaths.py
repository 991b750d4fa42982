"""Paths a spec may name: one type for every path-like option, confined to SLIMPIPE_DATA_ROOT.

Each dataset and model declares its options in `DATASET_OPTIONS` / `MODEL_OPTIONS`; a field typed
`DataPath` (or `ModelSource`, a path or a hub id) is a path, whatever its key. `spec_paths` finds
them by type, so the API (when it accepts a spec) and the worker (before it opens a file) check the
same set with `confine`. Messages name the field and the data root, never what a file holds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

MAX_PATH_CHARS = 4096
# A hub id: "bert-base-uncased" or "org/name"; anything else that names a model is a local path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class PathOutsideRoot(ValueError):
    """A spec names a path that does not resolve inside SLIMPIPE_DATA_ROOT."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a path string")
    if not value or len(value) > MAX_PATH_CHARS:
        raise ValueError(f"give a path of 1 to {MAX_PATH_CHARS} characters")
    if "\x00" in value:
        raise ValueError("contains a NUL byte; give a plain path")
    return value


class DataPath(str):
    """A local file or folder; relative values count from SLIMPIPE_DATA_ROOT."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda v: cls(_text(v)),
            json_schema_input_schema=core_schema.str_schema(min_length=1, max_length=MAX_PATH_CHARS),
            serialization=core_schema.to_string_ser_schema(),
        )

    @property
    def is_local(self) -> bool:
        return True


class ModelSource(DataPath):
    """A model or tokenizer: a hub id such as "org/name" (read from the offline cache), else a local path."""

    @property
    def is_local(self) -> bool:
        # A hub-shaped name that is also a folder here would be loaded from disk: treat it as a path.
        return not (HUB_ID.match(self) and ".." not in self) or Path(self).exists()


def confine(value: str, field: str, data_root: Path) -> Path:
    """`value` resolved (symlinks too) inside `data_root`; `PathOutsideRoot` names the field otherwise."""
    root = data_root.expanduser().resolve()
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if resolved != root and root not in resolved.parents:
        raise PathOutsideRoot(f"{field}: {value!r} is outside SLIMPIPE_DATA_ROOT ({root}); put the data there")
    return resolved


# --------------------------------------------------------------------------- what each dataset and model takes


class _Options(BaseModel):
    # Options that are not paths stay free-form (the builders read them); only the typed ones are checked here.
    model_config = ConfigDict(extra="allow", frozen=True)


class NoPathOptions(_Options):
    pass


class FolderOptions(_Options):
    path: DataPath | None = None


class TextFileOptions(_Options):
    train: DataPath | None = None
    val: DataPath | None = None


class PretrainedOptions(_Options):
    pretrained: ModelSource | None = None
    tokenizer: ModelSource | None = None


DATASET_OPTIONS: dict[str, type[_Options]] = {
    "synthetic_images": NoPathOptions,
    "synthetic_text": NoPathOptions,
    "digits": NoPathOptions,
    "mnist": NoPathOptions,
    "cifar10": FolderOptions,
    "image_folder": FolderOptions,
    "glue": FolderOptions,
    "text_file": TextFileOptions,
}
MODEL_OPTIONS: dict[str, type[_Options]] = {
    "tiny_mlp": NoPathOptions,
    "tiny_cnn": NoPathOptions,
    "mobilenetv2_cifar": NoPathOptions,
    "resnet18_cifar": NoPathOptions,
    "hf_classifier": PretrainedOptions,
    # The package ships its own weights; a tokenizer may still be named.
    "minilm": PretrainedOptions,
}


class OptionError(ValueError):
    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


def typed_options(kind: type[_Options], options: dict[str, Any]) -> _Options:
    """`options` validated against `kind`; an `OptionError` names the first bad option."""
    try:
        return kind.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        raise OptionError(key, str(error["msg"]).removeprefix("Value error, ")) from None


def option_paths(kind: type[_Options], options: dict[str, Any], prefix: str) -> list[tuple[str, DataPath]]:
    """(field, value) of every option typed as a path, e.g. ("data.options.train", "rte/train.csv")."""
    typed = typed_options(kind, options)
    return [
        (f"{prefix}.{key}", value)
        for key, value in typed
        if isinstance(value, DataPath) and value.is_local
    ]


def spec_paths(spec: Any) -> list[tuple[str, DataPath]]:
    """Every local path an `ExperimentSpec` names (model and data options), found by type."""
    return [
        *option_paths(MODEL_OPTIONS[spec.model.name], spec.model.options, "model.options"),
        *option_paths(DATASET_OPTIONS[spec.data.name], spec.data.options, "data.options"),
    ]


def confined_spec(spec: Any, data_root: Path) -> Any:
    """`spec` with every local path replaced by its resolved place inside `data_root` (the worker opens these)."""
    updates = {}
    for section in ("model", "data"):
        part = getattr(spec, section)
        kind = (MODEL_OPTIONS if section == "model" else DATASET_OPTIONS)[part.name]
        options = dict(part.options)
        for field, value in option_paths(kind, part.options, f"{section}.options"):
            options[field.rsplit(".", 1)[-1]] = str(confine(value, field, data_root))
        updates[section] = part.model_copy(update={"options": options})
    return spec.model_copy(update=updates)


def check_spec_paths(spec: Any, data_root: Path) -> list[dict[str, str]]:
    """`{field, message}` for every path of `spec` outside `data_root` (empty: all confined)."""
    errors = []
    for field, value in spec_paths(spec):
        try:
            confine(value, field, data_root)
        except PathOutsideRoot as exc:
            errors.append({"field": field, "message": str(exc).removeprefix(f"{field}: ")})
    return errors
