"""Turn a CTranslate2 Whisper checkpoint into a Hugging Face one, once, cached on disk.

The tensors come from `ct2_format` (reading `model.bin`, splitting fused projections back into Hugging
Face names). This module writes `model.safetensors` plus config, generation config, tokenizer and
feature-extractor files, and proves the result loads strictly into `WhisperForConditionalGeneration`
before it publishes the folder (atomic rename, marker file last).

torch/transformers are imported inside `ct2_to_hf`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np

from service.inference.ct2_format import ConversionError, layer_indices, map_whisper_weights, read_ct2_variables
from service.inference.models import OFFLINE_MODELS, ModelFiles, ModelNotFound, resolve

MARKER = "conversion-complete.json"
CONVERTER_VERSION = 1
# transformers 5.24's `from_pretrained` is not thread-safe: two concurrent loads leave the tied `proj_out`
# on the meta device, and later loads in the same process too. Every model load here holds this lock.
LOAD_LOCK = threading.RLock()
_LANG_TOKEN = re.compile(r"^<\|[a-z]{2,3}\|>$")


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
    decoder_layers = len(layer_indices(variables, "decoder"))
    decoder_heads = _scalar(variables, "decoder/num_heads", d_model // 64)
    alignment_heads = ct2_config.get("alignment_heads") or [
        [layer, head] for layer in range(decoder_layers // 2, decoder_layers) for head in range(decoder_heads)
    ]
    model_config: dict[str, Any] = {
        "vocab_size": vocab_size,
        "num_mel_bins": num_mel_bins,
        "d_model": d_model,
        "encoder_layers": len(layer_indices(variables, "encoder")),
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
        # With output_loading_info, from_pretrained returns (model, info); transformers' annotation says model only.
        model, info = cast(
            "tuple[WhisperForConditionalGeneration, dict[str, list[str]]]",
            WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32, output_loading_info=True),
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
    return ct2_to_hf(files.path, cache_folder("hf", files, Path(cache_dir)))


def cache_folder(prefix: str, files: ModelFiles, cache_dir: Path) -> Path:
    """Where a conversion of `files` is cached: `<prefix>-<name>` for the packaged models, else
    `<prefix>-<name>-<hash>`, the short hash of the resolved source path keeping same-named folders apart."""
    cache_dir = Path(cache_dir)
    if _is_packaged(files, cache_dir):
        return cache_dir / f"{prefix}-{files.name}"
    digest = hashlib.sha256(str(Path(files.path).resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"{prefix}-{files.name}-{digest}"


def _is_packaged(files: ModelFiles, cache_dir: Path) -> bool:
    """Whether `files` is a packaged model (`tiny.en`, `base`) rather than a folder that shares its name."""
    if files.name not in OFFLINE_MODELS:
        return False
    if files.name == "base":
        packaged = cache_dir / "ct2-base"  # where `models.resolve` joins the packaged halves
    else:
        try:
            packaged = resolve(files.name, cache_dir).path
        except ModelNotFound:
            return False
    return Path(files.path).resolve() == packaged.resolve()
