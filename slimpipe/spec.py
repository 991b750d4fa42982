"""The experiment language: what a run is, validated without importing torch."""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from slimpipe import names, yamlsafe
from slimpipe.datapaths import DATASET_OPTIONS, MODEL_OPTIONS, OptionError, typed_options
from slimpipe.jsonsafe import NUL_FREE, DocumentedAsSafeJson, json_safe
from slimpipe.presets import COMPRESSION_PRESETS


class SpecError(ValueError):
    """A spec that cannot run; `errors` lists `{"field": "a.b", "message": ...}`."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


class _Strict(BaseModel):
    # No NaN or Infinity anywhere: a learning rate of Infinity is accepted by nothing downstream.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: Free-form options: storable as given on SQLite and PostgreSQL (finite, 64-bit, no NUL).
Options = Annotated[dict[str, Any], AfterValidator(json_safe), DocumentedAsSafeJson]


def _check_options(kind: type[Any], options: dict[str, Any], prefix: str) -> None:
    """Options typed by what the dataset or model declares (paths are DataPath/ModelSource), named in full."""
    try:
        typed_options(kind, options)
    except OptionError as exc:
        raise PydanticCustomError("option", "{message}", {"message": exc.message, "field": f"{prefix}.{exc.key}"}) from None


#: Counts that end up in 32-bit columns (progress_step, progress_total).
MAX_COUNT = 2**31 - 1


# --------------------------------------------------------------------------- compression


class CompressionSpec(_Strict):
    """One direction of one boundary: top-k, then b-bit quantization, then entropy coding."""

    topk: float | None = Field(None, gt=0, le=1, description="keep ratio of largest |x| (1 = dense); null = dense")
    topk_mode: Literal["exact", "random"] = Field(
        "exact", description="exact: the k largest |x|; random: k positions drawn with probability ~|x|, scaled to be unbiased"
    )
    bits: int | None = Field(None, ge=1, le=16, description="uniform quantization bits; null = send values in dtype")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="wire dtype of values when bits is null")
    scale: Literal["tensor", "channel", "block"] = Field(
        "block", description="quantization scale per tensor, per channel (dim 1 of NCHW, else the last dim) or per block"
    )
    block: int = Field(64, ge=2, le=1 << 20, description="values per scale when scale=block (multiples of 64 are fastest)")
    rounding: Literal["nearest", "stochastic"] = Field("nearest", description="quantization rounding; stochastic is unbiased")
    step_std: float | None = Field(
        None,
        gt=0,
        le=64,
        description="quantization step as a multiple of each scale group's standard deviation, levels centred on "
        "the group's mean, values past the 2^bits levels clamped; entropy coding turns the level counts into bytes "
        "(needs entropy). null: the group's min..max in 2^bits - 1 steps",
    )
    rate: float | None = Field(
        None,
        gt=0,
        lt=16,
        description="target bits per value: like step_std, with the multiple of each group's standard deviation "
        "chosen for every tensor so that its levels' entropy is about this many bits (rate control; needs entropy "
        "and bits above it, which caps the levels: 8 spans the values at 1-4 bits per value)",
    )
    entropy: Literal["huffman", "ans"] | None = Field(None, description="lossless coding of the quantized symbols; needs bits")
    feedback: Literal["ef", "delta"] | None = Field(
        None,
        description="delta (AQ-SGD): send each sample's change since the last value sent for it; ef: carry each "
        "sample's compression error into its next visit. Both keep a per-sample cache keyed by the data index",
    )
    sample_cache: int = Field(
        100_000, ge=1, description="samples the delta/ef cache holds on each end; the least recently sent are evicted"
    )
    warmup_steps: int = Field(0, ge=0, description="training steps before the full compression applies (never in evaluation)")
    warmup: Literal["dense", "ramp"] = Field(
        "dense", description="dense: fp32 during warm-up; ramp: keep ratio 1 -> topk and 16 -> bits over warmup_steps"
    )

    @model_validator(mode="after")
    def _entropy_needs_symbols(self) -> CompressionSpec:
        if self.entropy is not None and self.bits is None:
            raise ValueError(f"entropy: {self.entropy} codes quantized symbols; set bits (e.g. 4) or entropy: null")
        if self.step_std is not None and (self.bits is None or self.entropy is None):
            raise ValueError(
                "step_std sets a fixed step whose levels only entropy coding makes cheap; set bits (e.g. 8) and "
                "entropy: ans, or step_std: null"
            )
        if self.rate is not None:
            if self.step_std is not None:
                raise ValueError("rate picks the step itself; set step_std: null or rate: null")
            if self.bits is None or self.entropy is None:
                raise ValueError("rate is reached by entropy-coding fixed steps; set bits (e.g. 8) and entropy: ans")
            if self.rate >= self.bits:
                raise ValueError(f"rate {self.rate:g} needs more than bits: {self.bits} levels; raise bits or lower rate")
        return self

    @property
    def is_identity(self) -> bool:
        return (
            self.topk in (None, 1.0)
            and self.bits is None
            and self.dtype == "fp32"
            and self.entropy is None
            and self.feedback is None
        )


class DirectionalCompression(_Strict):
    forward: CompressionSpec = CompressionSpec()
    backward: CompressionSpec = CompressionSpec()


class BoundaryOverride(_Strict):
    forward: CompressionSpec | None = None
    backward: CompressionSpec | None = None


BOUNDARY_KEY = re.compile(r"^[0-9]{1,4}$")


class CompressionConfig(_Strict):
    """A default for every boundary (or a named preset), overridable per boundary index (0 = after stage 0)."""

    preset: Literal["balanced", "aggressive", "extreme"] | None = Field(
        None, description="a tested default for every boundary: balanced ~5x, aggressive ~10x, extreme ~20x fewer bytes"
    )
    default: DirectionalCompression = DirectionalCompression()
    boundaries: dict[Annotated[int, Field(ge=0, le=1023)], BoundaryOverride] = Field(
        {}, json_schema_extra={"propertyNames": {"pattern": BOUNDARY_KEY.pattern}}
    )

    @field_validator("boundaries", mode="before")
    @classmethod
    def _index_keys(cls, boundaries: Any) -> Any:
        # JSON keys are strings: take "0", "1", ... and not what int() would also read (" 1", "1.0", "1_0").
        if isinstance(boundaries, dict):
            for key in boundaries:
                if isinstance(key, str) and not BOUNDARY_KEY.match(key):
                    raise ValueError(f"boundary {key!r} is not a boundary index; use 0, 1, ... (0 = after stage 0)")
        return boundaries

    @model_validator(mode="before")
    @classmethod
    def _preset_fills_default(cls, data: Any) -> Any:
        """The preset is the base of `default`; fields given in `default` replace the preset's, per direction."""
        if not isinstance(data, dict) or data.get("preset") not in COMPRESSION_PRESETS:
            return data  # no preset, or an unknown one (the Literal check names the choices)
        given = data.get("default") or {}
        if isinstance(given, BaseModel):
            given = given.model_dump()
        if not isinstance(given, dict):
            return data
        preset = COMPRESSION_PRESETS[data["preset"]]
        merged = {
            direction: {**preset.get(direction, {}), **(given.get(direction) or {})}
            for direction in ("forward", "backward")
        }
        return {**data, "default": merged}

    def for_boundary(self, index: int) -> DirectionalCompression:
        override = self.boundaries.get(index)
        if override is None:
            return self.default
        return DirectionalCompression(
            forward=override.forward or self.default.forward,
            backward=override.backward or self.default.backward,
        )


# --------------------------------------------------------------------------- experiment

_PATH_PART = r"[A-Za-z_]\w*(\[-?\d*:-?\d*\]|\[-?\d+\])?"
STAGE_PATH = re.compile(rf"^{_PATH_PART}(\.{_PATH_PART})*$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ModelSpec(_Strict):
    name: str = Field(json_schema_extra={"enum": list(names.MODELS)})
    options: Options = {}

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in names.MODELS:
            raise ValueError(f"unknown model {value!r}; choose one of {', '.join(names.MODELS)}")
        return value

    @model_validator(mode="after")
    def _typed_options(self) -> ModelSpec:
        _check_options(MODEL_OPTIONS[self.name], self.options, "model.options")
        return self


class DataSpec(_Strict):
    name: str = Field(json_schema_extra={"enum": list(names.DATASETS)})
    options: Options = {}
    batch_size: int = Field(32, ge=1, le=1 << 20)
    eval_batch_size: int | None = Field(None, ge=1, le=1 << 20)
    max_length: int = Field(128, ge=2, le=1 << 20, description="token length for text data")

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in names.DATASETS:
            raise ValueError(f"unknown dataset {value!r}; choose one of {', '.join(names.DATASETS)}")
        return value

    @model_validator(mode="after")
    def _typed_options(self) -> DataSpec:
        _check_options(DATASET_OPTIONS[self.name], self.options, "data.options")
        return self

    @property
    def eval_batch(self) -> int:
        """The validation batch: eval_batch_size, else the training batch size but at least 64."""
        return self.eval_batch_size or max(self.batch_size, 64)


class PipelineSpec(_Strict):
    stages: list[list[str]] | None = Field(None, description="module paths per stage, e.g. [['conv1','bn1'],['layers[0:3]']]")
    balance: int | None = Field(None, ge=1, le=1024, description="split automatically into N stages")
    microbatches: int = Field(4, ge=1, le=1 << 16)
    schedule: Literal["sequential", "gpipe", "1f1b"] = "gpipe"
    runner: Literal["inproc", "distributed"] = Field(
        "inproc",
        description="inproc: every stage in one process, link time modelled; "
        "distributed: one process per stage over torch.distributed, the link emulated and time measured",
    )
    placement: list[str] | None = Field(
        None,
        description="distributed only: the Celery worker queue of each stage, e.g. ['host-a', 'host-a', 'host-b']; "
        "null = every stage on the worker that takes the run",
    )
    deferred_bn: bool = False

    @field_validator("placement")
    @classmethod
    def _queues(cls, placement: list[str] | None) -> list[str] | None:
        if placement is not None:
            for i, queue in enumerate(placement):
                if not QUEUE_NAME.match(queue):
                    raise ValueError(f"stage {i} queue {queue!r} is not a queue name; use letters, digits, '.', '-', '_'")
        return placement

    @field_validator("stages")
    @classmethod
    def _paths(cls, stages: list[list[str]] | None) -> list[list[str]] | None:
        if stages is None:
            return None
        if not stages:
            raise ValueError("give at least one stage, or leave stages out to use the model's default partition")
        for i, stage in enumerate(stages):
            if not stage:
                raise ValueError(f"stage {i} is empty; every stage needs at least one module path")
            for path in stage:
                if not STAGE_PATH.match(path):
                    raise ValueError(
                        f"stage {i} path {path!r} is not a module path; write e.g. 'layers[0:3]' or 'encoder.layer[7:]'"
                    )
        return stages

    @model_validator(mode="after")
    def _one_way(self) -> PipelineSpec:
        if self.stages is not None and self.balance is not None:
            raise ValueError("give either stages or balance, not both")
        if self.placement is not None:
            if self.runner != "distributed":
                raise ValueError("placement puts stages on workers, which only runner: distributed does; "
                                 "set runner: distributed or remove placement")
            n = len(self.stages) if self.stages is not None else self.balance
            if n is None:
                raise ValueError("placement needs the stage count: give stages or balance as well")
            if len(self.placement) != n:
                raise ValueError(f"placement names {len(self.placement)} queues for {n} stages; give one per stage")
        return self


class LinkSpec(_Strict):
    bandwidth_mbps: float = Field(100.0, gt=0, le=1e9, description="link bandwidth in megabits per second")
    latency_ms: float = Field(1.0, ge=0, le=1e7, description="one-way latency per transfer")
    jitter_ms: float = Field(0.0, ge=0, le=1e7, description="distributed: extra random latency, uniform in [0, jitter_ms]")
    emulate: bool = Field(
        True,
        description="distributed: hold each message at the sender as this link would; false = the real transport only",
    )


class OptimSpec(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, le=MAX_COUNT)
    schedule: Literal["constant", "cosine", "linear"] = "constant"


class TrainSpec(_Strict):
    epochs: int | None = Field(None, ge=1, le=1_000_000)
    max_steps: int | None = Field(None, ge=1, le=MAX_COUNT)
    eval_every: int = Field(50, ge=1, le=MAX_COUNT, description="steps between validation passes")
    log_every: int = Field(1, ge=1, le=MAX_COUNT)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds torch, the data order and the codecs")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16", "fp64"] = Field(
        "fp32", description="fp16/bf16: autocast; fp64: model and inputs in float64 (exactness checks)"
    )
    eval_compression: Literal["compressed", "dense", "both"] = "compressed"
    checkpoint_every: int | None = Field(
        None, ge=1, le=MAX_COUNT,
        description="save a checkpoint every N steps, after the last step and where the run is stopped; "
        "`slimpipe train --resume` and a retry through the service continue from it",
    )
    threads: int | None = Field(None, ge=1, le=512, description="CPU threads for torch; null = torch's default")

    @model_validator(mode="after")
    def _length(self) -> TrainSpec:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set train.epochs or train.max_steps so the run knows when to stop")
        return self


class ExperimentSpec(_Strict):
    name: str = Field("experiment", min_length=1, max_length=200, pattern=NUL_FREE)
    model: ModelSpec
    data: DataSpec
    pipeline: PipelineSpec = PipelineSpec()
    compression: CompressionConfig = CompressionConfig()
    link: LinkSpec = LinkSpec()
    optim: OptimSpec = OptimSpec()
    train: TrainSpec = TrainSpec(max_steps=100)
    tags: list[Annotated[str, Field(min_length=1, max_length=100, pattern=NUL_FREE)]] = Field([], max_length=100)

    @model_validator(mode="after")
    def _boundaries_exist(self) -> ExperimentSpec:
        n_stages = len(self.pipeline.stages) if self.pipeline.stages else self.pipeline.balance
        if n_stages is not None:
            for index in self.compression.boundaries:
                if not 0 <= index < n_stages - 1:
                    raise PydanticCustomError(
                        "boundary_range",
                        "boundary {index} does not exist: {n} stages have boundaries 0..{last}; use one of those indices",
                        {"index": index, "n": n_stages, "last": n_stages - 2, "field": f"compression.boundaries.{index}"},
                    )
        return self

    @model_validator(mode="after")
    def _microbatches_fit(self) -> ExperimentSpec:
        if self.pipeline.microbatches > self.data.batch_size:
            raise PydanticCustomError(
                "microbatches_batch",
                "{m} micro-batches need a batch of at least {m} samples (data.batch_size is {b}); "
                "lower pipeline.microbatches or raise data.batch_size",
                {"m": self.pipeline.microbatches, "b": self.data.batch_size, "field": "pipeline.microbatches"},
            )
        return self

    @model_validator(mode="after")
    def _distributed_precision(self) -> ExperimentSpec:
        if self.pipeline.runner == "distributed" and self.train.precision == "fp16":
            raise PydanticCustomError(
                "distributed_fp16",
                "fp16 needs one loss scaler across all stages, which the distributed runner does not keep; "
                "use bf16 or fp32",
                {"field": "train.precision"},
            )
        return self

    @property
    def n_stages(self) -> int | None:
        return len(self.pipeline.stages) if self.pipeline.stages else self.pipeline.balance


# --------------------------------------------------------------------------- loading, errors


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def _message(error: Any) -> str:
    msg = str(error["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        return "is not a known field; remove it or check its spelling"
    if error["type"] == "missing":
        return "is required"
    return msg


def spec_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as one sentence per field, paths dotted like the sweep syntax."""
    return [
        {"field": (e.get("ctx") or {}).get("field") or _field_path(e["loc"]) or "spec", "message": _message(e)}
        for e in exc.errors()
    ]


def parse_spec(data: dict[str, Any] | ExperimentSpec) -> ExperimentSpec:
    if isinstance(data, ExperimentSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError([{"field": "spec", "message": "must be a mapping (YAML or JSON object)"}])
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(spec_errors(exc)) from None


def load_spec_text(text: str) -> dict[str, Any]:
    try:
        data = yamlsafe.load(text)
    except yamlsafe.YAMLLimitError as exc:
        raise SpecError([{"field": "spec", "message": f"is too large: it {exc}"}]) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise SpecError([{"field": "spec", "message": f"is not valid YAML/JSON: {exc}"}]) from None
    if not isinstance(data, dict):
        raise SpecError([{"field": "spec", "message": "must be a mapping (YAML or JSON object)"}])
    return data


def load_spec(path: str | Path) -> ExperimentSpec:
    return parse_spec(load_spec_text(Path(path).read_text()))


def dump_spec(spec: ExperimentSpec) -> dict[str, Any]:
    return json.loads(spec.model_dump_json())


# --------------------------------------------------------------------------- sweeps


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with the dotted `path` set, creating mappings on the way."""
    out = copy.deepcopy(data)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError([{"field": path, "message": f"{part!r} is not a mapping, so it cannot hold {parts[-1]!r}"}])
        node = child
    node[parts[-1]] = value
    return out


def apply_settings(data: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """`data` with each `PATH=VALUE` of `--set` applied in order; VALUE is read as YAML (`0.1`, `true`, `[1, 2]`)."""
    for setting in settings:
        path, sep, value = setting.partition("=")
        if not sep or not path.strip():
            raise SpecError([{"field": setting, "message": "write --set as PATH=VALUE, e.g. train.max_steps=20"}])
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SpecError([{"field": path.strip(), "message": f"{value!r} is not a YAML value; quote it"}]) from None
        data = set_path(data, path.strip(), parsed)
    return data


def expand_sweep(spec: dict[str, Any], sweep: dict[str, list[Any]] | None) -> list[tuple[dict[str, Any], ExperimentSpec]]:
    """One (sweep values, validated spec) per point of the grid over the sweep's axes."""
    if not sweep:
        return [({}, parse_spec(spec))]
    for path, axis in sweep.items():
        if not isinstance(axis, list) or not axis:
            raise SpecError([{"field": f"sweep.{path}", "message": "give a non-empty list of values"}])
    axes = list(sweep)
    points: list[tuple[dict[str, Any], ExperimentSpec]] = []
    for combo in itertools.product(*(sweep[a] for a in axes)):
        data = spec
        for path, value in zip(axes, combo, strict=True):
            data = set_path(data, path, value)
        point = dict(zip(axes, combo, strict=True))
        try:
            points.append((point, parse_spec(data)))
        except SpecError as exc:
            raise SpecError([{**e, "message": f"{e['message']} (sweep value {point})"} for e in exc.errors]) from None
    return points
