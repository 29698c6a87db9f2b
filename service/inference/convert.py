"""Turn a CTranslate2 Whisper checkpoint into a Hugging Face one, once, cached on disk.

The CTranslate2 `model.bin` is a flat list of named tensors. Its Whisper names are the reverse of
ctranslate2's `WhisperLoader` (converters/transformers.py): self-attention q/k/v are fused into one
`linear_0`, cross-attention k/v into `linear_1`, and the output projection is an alias of the token
embeddings. This module splits them back, writes `model.safetensors` plus config, generation config,
tokenizer and feature-extractor files, and proves the result loads strictly into
`WhisperForConditionalGeneration` before it publishes the folder (atomic rename, marker file last).

`read_ct2_variables` needs only numpy; torch/transformers are imported inside `ct2_to_hf`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from service.inference.models import ModelFiles

MARKER = "conversion-complete.json"
CONVERTER_VERSION = 1
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
# transformers 5.24's `from_pretrained` is not thread-safe: two concurrent loads leave the tied `proj_out`
# on the meta device, and later loads in the same process too. Every model load here holds this lock.
LOAD_LOCK = threading.RLock()
_LANG_TOKEN = re.compile(r"^<\|[a-z]{2,3}\|>$")


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


def _layer_indices(variables: dict[str, np.ndarray], prefix: str) -> list[int]:
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
    for i in _layer_indices(variables, "encoder"):
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
    for i in _layer_indices(variables, "decoder"):
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


# ---------------------------------------------------------------------------------------------- configs


def _scalar(variables: dict[str, np.ndarray], name: str, default: int) -> int:
    value = variables.get(name)
    return int(value) if value is not None and value.ndim == 0 else default


def _tokenizer_with_timestamps(tokenizer_json: dict[str, Any], vocabulary: list[str]) -> dict[str, Any]:
    """Add the timestamp tokens `<|0.00|>` … `<|30.00|>` (absent from the CT2 tokenizer.json)."""
    known = set(tokenizer_json["model"]["vocab"].values()) | {t["id"] for t in tokenizer_json["added_tokens"]}
    for token_id in range(max(known) + 1, len(vocabulary)):
        tokenizer_json["added_tokens"].append(
            {
                "id": token_id,
                "content": vocabulary[token_id],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": False,
            }
        )
    return tokenizer_json


def _special_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    ids = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    ids.update({k: v for k, v in tokenizer_json["model"]["vocab"].items() if k.startswith("<|")})
    return ids


def whisper_configs(
    variables: dict[str, np.ndarray], ct2_config: dict[str, Any], tokenizer_json: dict[str, Any], tied: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`WhisperConfig` kwargs, `GenerationConfig` kwargs) for the checkpoint."""
    conv1 = variables["encoder/conv1/weight"]
    d_model, num_mel_bins = int(conv1.shape[0]), int(conv1.shape[1])
    vocab_size = int(variables["decoder/embeddings/weight"].shape[0])
    specials = _special_ids(tokenizer_json)

    def special(*names: str) -> int:
        for name in names:
            if name in specials:
                return specials[name]
        raise ConversionError(f"the tokenizer has none of {names}")

    eot = special("<|endoftext|>")
    sot = special("<|startoftranscript|>")
    no_timestamps = special("<|notimestamps|>")
    multilingual = vocab_size >= 51865  # OpenAI's own rule (whisper/model.py)
    decoder_layers = len(_layer_indices(variables, "decoder"))
    decoder_heads = _scalar(variables, "decoder/num_heads", d_model // 64)
    alignment_heads = ct2_config.get("alignment_heads") or [
        [layer, head] for layer in range(decoder_layers // 2, decoder_layers) for head in range(decoder_heads)
    ]
    model_config: dict[str, Any] = {
        "vocab_size": vocab_size,
        "num_mel_bins": num_mel_bins,
        "d_model": d_model,
        "encoder_layers": len(_layer_indices(variables, "encoder")),
        "encoder_attention_heads": _scalar(variables, "encoder/num_heads", d_model // 64),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_layers": decoder_layers,
        "decoder_attention_heads": decoder_heads,
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "decoder_start_token_id": sot,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [220, eot])),
        "tie_word_embeddings": tied,
        "scale_embedding": False,
        "activation_function": "gelu",
    }
    generation: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": model_config["max_target_positions"],
        "suppress_tokens": model_config["suppress_tokens"],
        "begin_suppress_tokens": model_config["begin_suppress_tokens"],
        "alignment_heads": [list(map(int, pair)) for pair in alignment_heads],
        "no_timestamps_token_id": no_timestamps,
        "prev_sot_token_id": special("<|startofprev|>"),
        "max_initial_timestamp_index": 50,  # first timestamp ≤ 1.0 s, as in OpenAI's decoder
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if multilingual:
        id_to_token = {v: k for k, v in specials.items()}
        lang_ids = ct2_config.get("lang_ids") or [
            v for k, v in specials.items() if _LANG_TOKEN.match(k) and v > sot and v < no_timestamps
        ]
        generation["lang_to_id"] = {id_to_token[i]: int(i) for i in sorted(lang_ids)}
        generation["task_to_id"] = {
            "transcribe": special("<|transcribe|>"),
            "translate": special("<|translate|>"),
        }
    return model_config, generation


# ---------------------------------------------------------------------------------------------- writing


def is_complete(out_dir: Path) -> bool:
    """Whether `out_dir` holds a finished conversion by this converter version."""
    marker = Path(out_dir) / MARKER
    try:
        return json.loads(marker.read_text()).get("converter_version") == CONVERTER_VERSION
    except (OSError, ValueError):
        return False


def ct2_to_hf(ct2_dir: Path, out_dir: Path) -> Path:
    """Convert the CTranslate2 Whisper checkpoint in `ct2_dir` into a Hugging Face folder `out_dir`.

    Returns at once when `out_dir` already holds a complete conversion. Otherwise builds the folder in a
    temporary sibling, verifies a strict load (no missing, unexpected or mismatched keys), writes the
    marker last and renames the folder into place, so concurrent processes never see half a checkpoint.
    Within one process, conversions are serialised (`LOAD_LOCK`).
    """
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    with LOAD_LOCK:
        if is_complete(out_dir):
            return out_dir
        _convert(ct2_dir, out_dir)
    return out_dir


def _convert(ct2_dir: Path, out_dir: Path) -> None:
    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        tensor_count = _write_checkpoint(ct2_dir, tmp)
        count = _verify_strict_load(tmp)
        if count != tensor_count:
            raise ConversionError(f"the loaded model has {count} tensors, the conversion produced {tensor_count}")
        marker = {
            "converter_version": CONVERTER_VERSION,
            "source": str(ct2_dir.resolve()),
            "source_bytes": (ct2_dir / "model.bin").stat().st_size,
            "tensors": count,
            "seconds": round(time.monotonic() - started, 2),
        }
        for file in tmp.iterdir():
            file.chmod(0o644)  # safetensors writes 0600; the cache is shared by the service's processes
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename `tmp` to `out_dir`; a complete `out_dir` made meanwhile by another process wins."""
    for _ in range(3):
        try:
            os.rename(tmp, out_dir)
            return
        except OSError:
            if is_complete(out_dir):
                return
            if out_dir.exists():  # stale or outdated folder: move it aside, then retry
                stale = out_dir.with_name(f".{out_dir.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
                try:
                    os.rename(out_dir, stale)
                except OSError:
                    continue
                shutil.rmtree(stale, ignore_errors=True)
    raise ConversionError(f"could not move the converted checkpoint into {out_dir}")


def _write_checkpoint(ct2_dir: Path, out: Path) -> int:
    """Write safetensors, configs, tokenizer and preprocessor files into `out`; return the tensor count."""
    from safetensors.numpy import save_file
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperTokenizer

    variables = read_ct2_variables(ct2_dir / "model.bin")
    state, tied = map_whisper_weights(variables)
    floats = {v.dtype for n, v in variables.items() if v.ndim > 0 and v.dtype.kind == "f"}
    dtype = np.float16 if floats == {np.dtype(np.float16)} else np.float32
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").exists() else {}
    tokenizer_json = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary_file = ct2_dir / "vocabulary.txt"
    if vocabulary_file.exists():
        vocabulary = vocabulary_file.read_text(encoding="utf-8").splitlines()
    else:  # vocabulary.json in newer conversions
        vocabulary = json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    tokenizer_json = _tokenizer_with_timestamps(tokenizer_json, vocabulary)

    model_kwargs, generation_kwargs = whisper_configs(variables, ct2_config, tokenizer_json, tied)
    config = WhisperConfig(**model_kwargs)
    config.dtype = "float16" if dtype == np.float16 else "float32"
    config.architectures = ["WhisperForConditionalGeneration"]
    config.save_pretrained(out)
    GenerationConfig(**generation_kwargs).save_pretrained(out)

    to_save = {
        name: np.ascontiguousarray(array.astype(dtype, copy=False))
        for name, array in state.items()
        if not (tied and name == "proj_out.weight")
    }
    save_file(to_save, str(out / "model.safetensors"), metadata={"format": "pt"})

    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    specials = [t["content"] for t in tokenizer_json["added_tokens"] if t.get("special")]
    tokenizer = WhisperTokenizer(tokenizer_file=str(out / "tokenizer.json"), additional_special_tokens=specials)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=model_kwargs["num_mel_bins"]).save_pretrained(out)
    return len(state)


def _verify_strict_load(path: Path) -> int:
    """Load `path` strictly with transformers; return the model's tensor count (tied weights included)."""
    import torch
    from transformers import WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model, info = WhisperForConditionalGeneration.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True
        )
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    problems = {k: list(v) for k, v in info.items() if v}
    if problems:
        raise ConversionError(f"the converted checkpoint does not load strictly: {problems}")
    return len(model.state_dict())


def ensure_hf_checkpoint(files: ModelFiles, cache_dir: Path) -> Path:
    """A Hugging Face checkpoint folder for `files`, converting CTranslate2 ones into the cache once."""
    if files.format == "huggingface":
        return files.path
    return ct2_to_hf(files.path, Path(cache_dir) / f"hf-{files.name}")
