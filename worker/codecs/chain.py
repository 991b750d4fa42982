"""The stateless transform chain: top-k -> quantize (or cast) -> bit-pack or entropy-code -> wire.

Three backends compute the same format: "numba" (fused CPU kernels), "triton" (fused kernels on
the tensor's device, see triton_chain.py; byte-identical to numba) and "torch" (torch ops on the
tensor's own device, the reference; only finished bytes, or b-bit symbols for the entropy stage,
reach the host; its top-k is torch.topk's exact choice, so with top-k its bytes can differ from
numba's). "auto" picks numba for CPU tensors and torch for others, or triton where the worker's
SLIMPIPE_GPU_CODECS=triton.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from worker.codecs import bitpack, entropy, fused, indexset, quantize, topk
from worker.codecs.wire import CodecError, Header, aligned_words, pack, peek_numel, unpack

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
SPEC_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


BACKENDS = ("auto", "numba", "torch", "triton")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


GPU_BACKEND_ENV = "SLIMPIPE_GPU_CODECS"  # what "auto" picks for GPU tensors on this worker: torch (default) or triton


def gpu_backend() -> str:
    """The backend "auto" picks for GPU tensors: torch, or triton where SLIMPIPE_GPU_CODECS=triton.
    Triton stays opt-in: on an H200 (triton 3.6) its quantize refused real MobileNetV2 gradients as
    non-finite where the torch and numba paths encode them (docs/results.md); torch is the reference."""
    chosen = os.environ.get(GPU_BACKEND_ENV, "").strip() or "torch"
    if chosen not in ("torch", "triton"):
        raise ValueError(f"{GPU_BACKEND_ENV} must be torch or triton (the codec backend for GPU tensors), not {chosen!r}")
    return chosen


def pick_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "numba" if device.type == "cpu" else pick_backend(gpu_backend(), device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    if backend == "triton" and not triton_available():
        raise ValueError("backend 'triton' needs the triton package (pip install triton==3.9.0); or use backend: torch")
    return backend


def _values_bytes(values: torch.Tensor, dtype: str) -> bytes | np.ndarray:
    cast = values.to(TORCH_DTYPES[dtype])
    if dtype == "bfloat16":
        cast = cast.view(torch.int16)
    return cast.cpu().numpy().view(np.uint8)


def encode(x: torch.Tensor, spec, *, device_payload: bool = False, **options) -> Any:
    """One tensor -> payload bytes (see _encode); small tensors run on the calling thread. With
    `device_payload` (triton backend) a uint8 tensor on x's device, checksum "words", instead."""
    backend = pick_backend(options.pop("backend", "auto"), x.device)
    if backend == "triton" or device_payload:
        if backend != "triton":
            raise ValueError(f"device payloads need backend 'triton' (or 'auto' on a GPU), not {backend!r}")
        from worker.codecs import triton_chain

        payload = triton_chain.encode(x, spec, checksum="words" if device_payload else "xxh3", **options)
        return payload.finish() if device_payload else payload.to_bytes()
    with fused.threads_for(x.numel()):
        return _encode(x, spec, backend=backend, **options)


def _encode(x: torch.Tensor, spec, *, backend: str = "auto", rng: np.random.Generator, dense: bool = False,
           feedback: str | None = None, keys: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> bytes:
    """One tensor -> payload bytes; `dense` sends fp32 values untouched (warmup); `dtype` is what
    decode returns (default: x's dtype)."""
    if x.dtype not in DTYPE_NAMES or (dtype is not None and dtype not in DTYPE_NAMES):
        raise CodecError(f"codecs encode floating tensors (fp32/fp16/bf16/fp64), not {dtype or x.dtype}")
    backend = pick_backend(backend, x.device)
    shape = tuple(x.shape)
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    header = Header(shape=shape, dtype=DTYPE_NAMES[dtype or x.dtype], block=spec.block, feedback=feedback)
    sections: dict[str, object] = {}
    if keys is not None:
        sections["keys"] = keys.detach().to("cpu", torch.int64).contiguous().numpy()
    if dense:
        header.kept = n
        sections["values"] = _values_bytes(flat, "float32")
        return pack(header, sections)
    k = topk.keep_count(spec.topk, n)
    header.topk, header.kept = k < n, k
    pos: Any = None  # numpy positions (numba backend) or a tensor (torch backend)
    if header.topk and spec.topk_mode == "random":
        pos, vals = topk.select_random(flat, k, float(rng.random()))
        header.kept = k = pos.numel()
        sections["index"] = indexset.encode_torch(pos, n)
        if backend == "numba":
            pos, vals_np = pos.cpu().numpy(), vals.cpu().numpy()
    elif backend == "numba":
        flat_np = flat.cpu().contiguous().numpy()
        if header.topk:
            pos, vals_np = topk.select(flat_np, k, rng)
            header.kept = k = pos.size
            sections["index"] = indexset.encode(pos, n)
        else:
            vals_np = flat_np
    else:
        if header.topk:
            pos, vals = topk.select_torch(flat, k)
            sections["index"] = indexset.encode_torch(pos, n)
        else:
            vals = flat
    if not spec.bits:
        header.value_dtype = SPEC_DTYPES[spec.dtype]
        values = torch.from_numpy(vals_np) if backend == "numba" else vals
        sections["values"] = _values_bytes(values, header.value_dtype)
        return pack(header, sections)
    header.bits, header.scale, header.entropy = spec.bits, spec.scale, spec.entropy
    inner, ngroups, by_pos = quantize.group_layout(spec.scale, shape, k, spec.block, header.topk)
    stochastic = spec.rounding == "stochastic"
    if backend == "numba":
        where = pos if by_pos else None
        seed = int(rng.integers(0, 2**63))
        if spec.step_std is not None or spec.rate is not None:
            lo, step = quantize.std_scales(
                vals_np, spec.bits, inner, ngroups, where, spec.step_std, spec.rate, stochastic
            )
            symbols = quantize.quantize_symbols(vals_np, spec.bits, lo, step, inner, ngroups, where, stochastic, seed)
        elif spec.scale == "block" and spec.block % 64 == 0:
            lo, step, out = quantize.block_quantize(vals_np, spec.bits, spec.block, stochastic, seed, not spec.entropy)
            if spec.entropy:
                symbols = out
            else:
                sections["values"] = out
        elif spec.entropy:
            lo, step = quantize.group_scales(vals_np, spec.bits, inner, ngroups, where)
            symbols = quantize.quantize_symbols(vals_np, spec.bits, lo, step, inner, ngroups, where, stochastic, seed)
        else:
            lo, step = quantize.group_scales(vals_np, spec.bits, inner, ngroups, where)
            sections["values"] = quantize.quantize_packed(
                vals_np, spec.bits, lo, step, inner, ngroups, where, stochastic, seed
            )
    else:
        where = pos if by_pos else None
        if spec.step_std is not None or spec.rate is not None:  # the statistics on the host, as numba's
            host_pos = None if where is None else where.cpu().numpy()
            lo, step = quantize.std_scales(
                vals.cpu().numpy(), spec.bits, inner, ngroups, host_pos, spec.step_std, spec.rate, stochastic
            )
        else:
            lo, step = quantize.group_scales_torch(vals, spec.bits, inner, ngroups, where)
        sym_t = quantize.quantize_torch(vals, spec.bits, lo, step, inner, ngroups, where, stochastic)
        if spec.entropy:
            symbols = sym_t.to("cpu", torch.int32).numpy().astype(np.uint16)
        else:
            sections["values"] = bitpack.pack_torch(sym_t, spec.bits).cpu().numpy()
    sections["scales"] = quantize.scales_bytes(lo, step)
    if spec.entropy:
        sections["model"], sections["values"] = entropy.encode(symbols, spec.entropy)
    return pack(header, sections)


def _view(section: memoryview, dtype: torch.dtype) -> torch.Tensor:
    """The payload's bytes as a read-only tensor, without a copy; callers convert or clone before writing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch notes that the buffer is not writable
        return torch.frombuffer(section, dtype=dtype)


def _raw_values(section: memoryview, dtype: str, count: int, device: torch.device, *, copy: bool = True) -> torch.Tensor:
    """Unquantized values as fp32 on `device`; only the wire bytes cross to the device, then they widen there.
    Without `copy`, fp32 values on the CPU may be a read-only view of the payload."""
    itemsize = 2 if dtype in ("float16", "bfloat16") else 4 if dtype == "float32" else 8
    if section.nbytes != count * itemsize:
        raise CodecError(f"values section is {section.nbytes} bytes; {count} {dtype} values need {count * itemsize}")
    if count == 0:
        return torch.zeros(0, device=device)
    values = _view(section, torch.uint8).to(device).view(TORCH_DTYPES[dtype])
    if values.dtype == torch.float32:
        return values.clone() if copy and values.device.type == "cpu" else values
    return values.float()


def decode(payload: Any, *, device: torch.device | str | None = None, backend: str = "auto"):
    """Payload -> (fp32 tensor, header, keys) (see _decode); small payloads run on the calling thread.
    A uint8 tensor payload (from `encode(..., device_payload=True)`) decodes on the triton backend."""
    if isinstance(payload, torch.Tensor) or pick_backend(backend, torch.device(device or "cpu")) == "triton":
        pick_backend("triton", torch.device("cpu"))  # a clear error without triton
        from worker.codecs import triton_chain

        return triton_chain.decode(payload, device)
    with fused.threads_for(peek_numel(payload)):
        return _decode(payload, device=device, backend=backend)


def _decode(payload: bytes, *, device: torch.device | str | None = None, backend: str = "auto"):
    """Payload -> (fp32 tensor on `device` (CPU default), header, keys or None); header.dtype is the
    dtype the encoder was given, which callers cast to."""
    header, sec = unpack(payload)
    device = torch.device(device or "cpu")
    backend = pick_backend(backend, device)
    n, k = header.numel, header.kept
    keys = None
    if header.lengths["keys"]:
        if header.lengths["keys"] % 8:
            raise CodecError("keys section is not a whole number of int64 keys")
        keys = _view(sec["keys"], torch.int64).clone()
    if header.topk == (k == n) and n:
        raise CodecError(f"payload header is inconsistent: topk={header.topk} with {k} of {n} values")
    pos: Any = None  # numpy positions (numba backend) or a tensor (torch backend)
    if header.topk:
        pos = indexset.decode(sec["index"], n, k) if backend == "numba" else indexset.decode_torch(sec["index"], n, k, device)
    elif header.lengths["index"]:
        raise CodecError("dense payload carries an index section")
    if not header.bits:
        values = _raw_values(sec["values"], header.value_dtype, k, device, copy=pos is None)
        if pos is None:
            out = values
        elif isinstance(pos, np.ndarray) and device.type == "cpu":  # numpy's scatter: half torch's index_put
            out_np = np.zeros(n, dtype=np.float32)
            out_np[pos] = values.numpy()
            out = torch.from_numpy(out_np)
        else:
            out = torch.zeros(n, device=device)
            out[torch.as_tensor(pos, device=device)] = values
        return out.reshape(header.shape), header, keys
    inner, ngroups, by_pos = quantize.group_layout(header.scale, header.shape, k, header.block, header.topk)
    lo, step = quantize.parse_scales(sec["scales"], ngroups)
    symbols = entropy.decode(sec["model"], sec["values"], k, header.bits) if header.entropy else None
    if not header.entropy and sec["values"].nbytes != bitpack.packed_bytes(k, header.bits):
        raise CodecError(f"values section is {sec['values'].nbytes} bytes; {k} {header.bits}-bit values need "
                         f"{bitpack.packed_bytes(k, header.bits)}")
    if backend == "numba":
        out_np = np.zeros(n, dtype=np.float32) if header.topk else np.empty(n, dtype=np.float32)
        if symbols is not None:
            quantize.dequantize_symbols(symbols, lo, step, inner, ngroups, pos, by_pos, out_np)
        elif k:
            quantize.dequantize_packed(aligned_words(sec["values"]), header.bits, lo, step, inner, ngroups, pos, by_pos,
                                       out_np)
        out = torch.from_numpy(out_np)
    else:
        if symbols is not None:
            sym = torch.from_numpy(symbols.astype(np.int32)).to(device)
        else:
            packed = _view(sec["values"], torch.uint8) if k else torch.zeros(0, dtype=torch.uint8)
            sym = bitpack.unpack_torch(packed.to(device), header.bits, k)
        values = quantize.dequantize_torch(sym, lo, step, inner, ngroups, pos, by_pos)
        if pos is None:
            out = values
        else:
            out = torch.zeros(n, device=device)
            out[pos] = values
    return out.reshape(header.shape).to(device), header, keys
