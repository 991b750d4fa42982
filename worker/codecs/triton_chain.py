"""The transform chain on the "triton" backend: chain.py's format and choices, computed on the tensor's device.

`encode` returns a DevicePayload whose sections the kernels have written in place; `finish()`
gives the device uint8 tensor (checksum "words", summed on the device, for NCCL and friends),
`to_bytes()` the host bytes, identical to the numba backend's for the same input and generator.
Entropy coding stays on the host: only the b-bit symbols cross (see docs/results.md for why).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from worker.codecs import entropy, quantize, topk, triton_quantize, triton_topk
from worker.codecs.device_wire import DevicePayload
from worker.codecs.device_wire import read as read_device
from worker.codecs.wire import SECTIONS, CodecError, Header, _as_bytes, section_slices, unpack

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
SPEC_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _nbytes(part: bytes | torch.Tensor) -> int:
    return part.numel() * part.element_size() if isinstance(part, torch.Tensor) else len(part)


def _values_tensor(values: torch.Tensor, dtype: str) -> torch.Tensor:
    cast = values.to(TORCH_DTYPES[dtype])
    return cast.view(torch.int16) if dtype == "bfloat16" else cast


def encode(x: torch.Tensor, spec, *, rng: np.random.Generator, dense: bool = False, feedback: str | None = None,
           keys: torch.Tensor | None = None, dtype: torch.dtype | None = None, checksum: str = "words") -> DevicePayload:
    """One tensor -> payload on x's device (see chain._encode for the arguments)."""
    if x.dtype not in DTYPE_NAMES or (dtype is not None and dtype not in DTYPE_NAMES):
        raise CodecError(f"codecs encode floating tensors (fp32/fp16/bf16/fp64), not {dtype or x.dtype}")
    device = x.device
    flat = x.detach().reshape(-1).float().contiguous()
    n = flat.numel()
    header = Header(shape=tuple(x.shape), dtype=DTYPE_NAMES[dtype or x.dtype], block=spec.block, feedback=feedback)
    parts: dict[str, list[bytes | torch.Tensor]] = {}
    if keys is not None:
        parts["keys"] = [keys.detach().to(device, torch.int64).contiguous()]
    if dense:
        header.kept = n
        parts["values"] = [flat]
        return _assemble(header, parts, device, checksum)
    k = topk.keep_count(spec.topk, n)
    header.topk, header.kept = k < n, k
    pos, vals = None, flat
    if header.topk:
        pos = triton_topk.select(flat, k, rng)
        header.kept = k = pos.numel()
        parts["index"] = triton_topk.encode_index(pos, n)
        vals = flat[pos]
    if not spec.bits:
        header.value_dtype = SPEC_DTYPES[spec.dtype]
        parts["values"] = [_values_tensor(vals, header.value_dtype)]
        return _assemble(header, parts, device, checksum)
    if spec.step_std is not None or spec.rate is not None:
        field = "step_std" if spec.step_std is not None else "rate"
        raise CodecError(f"{field} is not in the triton backend yet; use backend: torch (same bytes)")
    header.bits, header.scale, header.entropy = spec.bits, spec.scale, spec.entropy
    inner, ngroups, by_pos = quantize.group_layout(spec.scale, header.shape, k, spec.block, header.topk)
    where = pos if by_pos else None
    stochastic = spec.rounding == "stochastic"
    seed = int(rng.integers(0, 2**63))  # drawn as the numba path draws it, stochastic or not
    if spec.entropy:
        scales = torch.empty(6 * ngroups, dtype=torch.uint8, device=device)
        symbols = triton_quantize.quantize(vals, spec.bits, spec.scale, inner, ngroups, where, stochastic, seed, scales, None)
        assert symbols is not None
        model, values = entropy.encode(symbols.cpu().numpy().astype(np.uint16), spec.entropy)
        parts.update(scales=[scales], model=[bytes(_as_bytes(model))], values=[bytes(_as_bytes(values))])
        return _assemble(header, parts, device, checksum)
    lengths = {name: sum(_nbytes(p) for p in section) for name, section in parts.items()}
    lengths.update(scales=6 * ngroups, values=(k * spec.bits + 7) // 8)
    payload = DevicePayload(header, lengths, device, checksum)
    for name, section in parts.items():
        payload.write(name, section)
    triton_quantize.quantize(vals, spec.bits, spec.scale, inner, ngroups, where, stochastic, seed,
                             payload.section("scales"), payload.section("values"), deferred=payload.defer)
    return payload


def _assemble(header: Header, parts: dict[str, list[bytes | torch.Tensor]], device, checksum: str) -> DevicePayload:
    payload = DevicePayload(header, {name: sum(_nbytes(p) for p in section) for name, section in parts.items()}, device, checksum)
    for name, section in parts.items():
        payload.write(name, section)
    return payload


def _sections_on(device: torch.device, payload, header: Header) -> dict[str, torch.Tensor]:
    """A host payload's sections as slices of one copy of it on `device` (one transfer, not one a section)."""
    data = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    at = data.numel() - 4 - sum(header.lengths[name] for name in SECTIONS)  # sections follow the head, in order
    return section_slices(data, header, at)


def decode(payload, device: torch.device | str | None = None) -> tuple[torch.Tensor, Header, torch.Tensor | None]:
    """Payload (host bytes, or a uint8 tensor on any device) -> (fp32 tensor on `device`, header, keys)."""
    verify_later: Callable[[], None] | None = None
    if isinstance(payload, torch.Tensor):
        device = torch.device(device) if device is not None else payload.device
        header, sec, verify = read_device(payload.to(device))
        if header.topk or header.entropy or not header.bits:  # sizes read from sections, or no kernel to overlap
            verify()
        else:  # a dense b-bit payload: its checksum and its dequantize are queued together, compared after
            verify_later = verify
    else:
        device = torch.device(device or "cpu")
        header, _ = unpack(payload)  # checksum verified here, on the host
        sec = _sections_on(device, payload, header)
    try:
        decoded = _decode_sections(header, sec, device)
    except CodecError:
        if verify_later is not None:
            verify_later()  # a corrupt payload is reported as corrupt, whatever it broke first
        raise
    if verify_later is not None:
        verify_later()
    return decoded


def _decode_sections(header: Header, sec: dict[str, torch.Tensor], device: torch.device):
    n, k = header.numel, header.kept
    keys = None
    if header.lengths["keys"]:
        if header.lengths["keys"] % 8:
            raise CodecError("keys section is not a whole number of int64 keys")
        keys = sec["keys"].clone().view(torch.int64).cpu()
    if header.topk == (k == n) and n:
        raise CodecError(f"payload header is inconsistent: topk={header.topk} with {k} of {n} values")
    pos = None
    if header.topk:
        pos = triton_topk.decode_index(sec["index"], n, k)
    elif header.lengths["index"]:
        raise CodecError("dense payload carries an index section")
    if not header.bits:
        itemsize = 2 if header.value_dtype in ("float16", "bfloat16") else 4 if header.value_dtype == "float32" else 8
        if header.lengths["values"] != k * itemsize:
            raise CodecError(f"values section is {header.lengths['values']} bytes; {k} {header.value_dtype} values "
                             f"need {k * itemsize}")
        raw = sec["values"].clone()
        values = (raw.view(torch.int16).view(torch.bfloat16) if header.value_dtype == "bfloat16"
                  else raw.view(TORCH_DTYPES[header.value_dtype])).float()
        if pos is None:
            return values.reshape(header.shape), header, keys
        out = torch.zeros(n, device=device)
        out[pos] = values
        return out.reshape(header.shape), header, keys
    inner, ngroups, by_pos = quantize.group_layout(header.scale, header.shape, k, header.block, header.topk)
    if header.lengths["scales"] != 6 * ngroups:
        raise CodecError(f"scales section is {header.lengths['scales']} bytes; {ngroups} groups need {6 * ngroups}")
    out = torch.zeros(n, device=device) if header.topk else torch.empty(n, device=device)
    if header.entropy:
        model_view, values_view = (memoryview(bytes(sec[s].cpu().numpy())) for s in ("model", "values"))
        symbols = torch.from_numpy(entropy.decode(model_view, values_view, k, header.bits).astype(np.int32)).to(device)
        triton_quantize.dequantize(None, symbols, header.bits, sec["scales"], header.scale, inner, ngroups, pos, by_pos, k, out)
    else:
        if header.lengths["values"] != (k * header.bits + 7) // 8:
            raise CodecError(f"values section is {header.lengths['values']} bytes; {k} {header.bits}-bit values need "
                             f"{(k * header.bits + 7) // 8}")
        triton_quantize.dequantize(sec["values"], None, header.bits, sec["scales"], header.scale, inner, ngroups, pos, by_pos, k, out)
    return out.reshape(header.shape), header, keys
