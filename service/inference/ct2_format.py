"""CTranslate2's Whisper checkpoint format: read `model.bin` and map its tensors to Hugging Face names.

The CTranslate2 `model.bin` is a flat list of named tensors. Its Whisper names are the reverse of
ctranslate2's `WhisperLoader` (converters/transformers.py): self-attention q/k/v are fused into one
`linear_0`, cross-attention k/v into `linear_1`, and the output projection is an alias of the token
embeddings. `map_whisper_weights` splits them back. Needs only numpy.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED_BINARY_VERSION = 6
# CTranslate2 DataType enum order (include/ctranslate2/types.h); 5 = bfloat16, handled by hand.
_CT2_DTYPES: dict[int, Any] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: "bfloat16",
}


class ConversionError(Exception):
    """The CTranslate2 checkpoint cannot be turned into a strictly loading Hugging Face checkpoint."""


# ---------------------------------------------------------------------------------------------- reading


def read_ct2_variables(model_bin: Path, dequantize: bool = True) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 `model.bin` (binary version 6) by name, aliases resolved.

    With `dequantize`, every int8/int16 variable that has a `<name>_scale` companion is returned as
    float32 (`q / scale`) and the scale itself is dropped. bfloat16 comes back as float32; float16 stays.
    Scalars (e.g. `encoder/num_heads`) come back as 0-d arrays.
    """
    data = Path(model_bin).read_bytes()
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = take("H")  # includes the trailing NUL
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    version = take("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise ConversionError(f"{model_bin}: CTranslate2 binary version {version} (only 6 is supported)")
    string()  # spec name, e.g. "WhisperSpec"
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        type_id = take("B")
        num_bytes = take("I")
        raw = data[offset : offset + num_bytes]
        offset += num_bytes
        dtype = _CT2_DTYPES.get(type_id)
        if dtype is None:
            raise ConversionError(f"{model_bin}: variable {name!r} has unknown dtype id {type_id}")
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=dtype)
        variables[name] = array.reshape(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if offset != len(data):
        raise ConversionError(f"{model_bin}: {len(data) - offset} trailing bytes after the aliases")
    if dequantize:
        _dequantize(variables)
    return variables


def _dequantize(variables: dict[str, np.ndarray]) -> None:
    for scale_name in [n for n in variables if n.endswith("_scale")]:
        base = scale_name[: -len("_scale")]
        quantized = variables.get(base)
        if quantized is None or quantized.dtype not in (np.int8, np.int16):
            continue
        scale = variables.pop(scale_name).astype(np.float32)
        if scale.ndim == 1:  # int8: one scale per output row
            scale = scale.reshape((-1,) + (1,) * (quantized.ndim - 1))
        dequantized = quantized.astype(np.float32) / scale
        # Aliases share the array object: replace every name that points at it.
        for name, value in list(variables.items()):
            if value is quantized:
                variables[name] = dequantized


# ---------------------------------------------------------------------------------------------- mapping


def layer_indices(variables: dict[str, np.ndarray], prefix: str) -> list[int]:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return sorted({int(m.group(1)) for name in variables if (m := pattern.match(name))})


def _split(array: np.ndarray, parts: int) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise ConversionError(f"cannot split a tensor of shape {array.shape} into {parts} equal parts")
    return np.split(array, parts, axis=0)


def map_whisper_weights(variables: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """Hugging Face `WhisperForConditionalGeneration` state dict from CTranslate2 Whisper variables.

    Returns the state dict (including `proj_out.weight`) and whether the output projection is tied to
    the token embeddings. Raises on any CTranslate2 tensor that has no Hugging Face counterpart.
    """
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in variables:
            raise ConversionError(f"the CTranslate2 checkpoint lacks {name!r}")
        used.add(name)
        return variables[name]

    def linear(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            out[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/gamma")
        out[f"{dst}.bias"] = get(f"{src}/beta")

    def fused(src: str, dsts: list[str]) -> None:
        """Split a fused q/k/v (or k/v) projection; k_proj has no bias in Whisper (CT2 stores zeros)."""
        weights = _split(get(f"{src}/weight"), len(dsts))
        biases = _split(get(f"{src}/bias"), len(dsts))
        for dst, weight, bias in zip(dsts, weights, biases, strict=True):
            out[f"{dst}.weight"] = weight
            if dst.endswith("k_proj"):
                if np.any(bias.astype(np.float32) != 0):
                    raise ConversionError(f"{src}: non-zero key bias, which Whisper's k_proj cannot hold")
            else:
                out[f"{dst}.bias"] = bias

    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"{enc}.{conv}")
    out[f"{enc}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", f"{enc}.layer_norm")
    for i in layer_indices(variables, "encoder"):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        attn = f"{dst}.self_attn"
        fused(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"])
        linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")

    out[f"{dec}.embed_tokens.weight"] = get("decoder/embeddings/weight")
    out[f"{dec}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", f"{dec}.layer_norm")
    for i in layer_indices(variables, "decoder"):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        attn, cross = f"{dst}.self_attn", f"{dst}.encoder_attn"
        fused(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"])
        linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{cross}.q_proj")
        fused(f"{src}/attention/linear_1", [f"{cross}.k_proj", f"{cross}.v_proj"])
        linear(f"{src}/attention/linear_2", f"{cross}.out_proj")
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")

    projection = get("decoder/projection/weight")
    if "decoder/projection/bias" in variables:
        raise ConversionError("the output projection has a bias, which Whisper's proj_out cannot hold")
    out["proj_out.weight"] = projection
    tied = projection is out[f"{dec}.embed_tokens.weight"] or np.array_equal(
        projection, out[f"{dec}.embed_tokens.weight"]
    )

    leftovers = sorted(n for n, v in variables.items() if v.ndim > 0 and n not in used)
    if leftovers:
        raise ConversionError(f"CTranslate2 tensors without a Hugging Face counterpart: {leftovers[:8]}")
    return out, tied
