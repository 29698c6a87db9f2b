"""CTranslate2 → Hugging Face conversion of the offline Whisper checkpoints (real files, no mocks)."""

from __future__ import annotations

import json
import multiprocessing
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.inference.convert import MARKER, cache_folder, ct2_to_hf, ensure_hf_checkpoint, is_complete
from service.inference.ct2_format import ConversionError, map_whisper_weights, read_ct2_variables
from service.inference.models import ModelFiles, resolve

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def tiny_variables() -> dict[str, np.ndarray]:
    return read_ct2_variables(resolve("tiny.en", Path("/nonexistent")).path / "model.bin")


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """A minimal CTranslate2 model.bin (binary version 6) with the given variables."""
    type_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = struct.pack("<I", 6) + string("TestSpec") + struct.pack("<II", 1, len(variables))
    for name, value in variables.items():
        out += string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", type_ids[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases.items())
    path.write_bytes(out)


def test_read_variables_dequantizes_int8_and_resolves_aliases(tmp_path: Path) -> None:
    weight = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]], dtype=np.float32)
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    quantized = np.rint(weight * scale[:, None]).astype(np.int8)
    norm = np.array([1.0, 2.0], dtype=np.float16)
    _write_ct2(
        tmp_path / "model.bin",
        {"a/weight": quantized, "a/weight_scale": scale, "b/gamma": norm, "n": np.array(8, dtype=np.int16)},
        {"c/weight": "a/weight"},
    )
    variables = read_ct2_variables(tmp_path / "model.bin")
    assert set(variables) == {"a/weight", "b/gamma", "n", "c/weight"}
    assert variables["a/weight"].dtype == np.float32
    np.testing.assert_allclose(variables["a/weight"], weight, atol=0.02)
    assert variables["c/weight"] is variables["a/weight"]
    assert variables["b/gamma"].dtype == np.float16 and int(variables["n"]) == 8
    raw = read_ct2_variables(tmp_path / "model.bin", dequantize=False)
    assert raw["a/weight"].dtype == np.int8 and "a/weight_scale" in raw


def test_read_variables_rejects_other_binary_versions(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 5) + b"\0" * 16)
    with pytest.raises(ConversionError, match="version 5"):
        read_ct2_variables(tmp_path / "model.bin")


def test_packaged_tiny_en_layout(tiny_variables: dict[str, np.ndarray]) -> None:
    assert tiny_variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert tiny_variables["encoder/conv1/weight"].dtype == np.float16  # stored as float16, not int8
    assert tiny_variables["decoder/projection/weight"] is tiny_variables["decoder/embeddings/weight"]
    assert int(tiny_variables["decoder/num_heads"]) == 6
    state, tied = map_whisper_weights(tiny_variables)
    assert tied and len(state) == 168  # 4 + 4 layers of tiny, proj_out included
    fused = tiny_variables["decoder/layer_2/attention/linear_1/weight"]
    np.testing.assert_array_equal(state["model.decoder.layers.2.encoder_attn.k_proj.weight"], fused[:384])
    np.testing.assert_array_equal(state["model.decoder.layers.2.encoder_attn.v_proj.weight"], fused[384:])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in state


def test_mapping_refuses_unknown_and_missing_tensors(tiny_variables: dict[str, np.ndarray]) -> None:
    extra = dict(tiny_variables, **{"decoder/layer_0/extra/weight": np.zeros((2, 2), np.float16)})
    with pytest.raises(ConversionError, match="without a Hugging Face counterpart"):
        map_whisper_weights(extra)
    missing = {k: v for k, v in tiny_variables.items() if k != "encoder/layer_3/ffn/linear_1/bias"}
    with pytest.raises(ConversionError, match="lacks"):
        map_whisper_weights(missing)


def test_base_converts_and_loads_strictly(model_cache: Path) -> None:
    import torch
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperTokenizer

    files = resolve("base", model_cache)
    started = time.monotonic()
    path = ensure_hf_checkpoint(files, model_cache)
    assert path == model_cache / "hf-base" and is_complete(path)
    print(f"base conversion (or cache hit): {time.monotonic() - started:.1f} s")
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert expected | {"tokenizer_config.json", "preprocessor_config.json", MARKER} <= {p.name for p in path.iterdir()}

    model, info = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    assert len(model.state_dict()) == 246
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    source = read_ct2_variables(files.path / "model.bin")
    fused = source["encoder/layer_5/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(model.model.encoder.layers[5].self_attn.v_proj.weight.detach().numpy(), fused[1024:])

    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_attention_heads) == (512, 6, 8)
    assert (config.vocab_size, config.decoder_start_token_id, config.eos_token_id) == (51865, 50258, 50257)
    generation = GenerationConfig.from_pretrained(path)
    ct2_config = json.loads((files.path / "config.json").read_text())
    assert generation.alignment_heads == ct2_config["alignment_heads"]
    assert generation.is_multilingual and len(generation.lang_to_id) == 99
    assert generation.lang_to_id["<|hi|>"] == 50276 and generation.lang_to_id["<|en|>"] == 50259
    assert generation.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert generation.no_timestamps_token_id == 50363 and generation.prev_sot_token_id == 50361

    tokenizer = WhisperTokenizer.from_pretrained(path)
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50364, 51864]
    ids = tokenizer(" ask not what your country", add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == " ask not what your country"


def test_base_generate_accepts_language_task_and_timestamps(model_cache: Path) -> None:
    """The generation config is complete enough for transformers' own Whisper `generate` API."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from service.audio import decode

    path = ensure_hf_checkpoint(resolve("base", model_cache), model_cache)
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    features = WhisperFeatureExtractor.from_pretrained(path)(
        decode(DATA / "en_jfk.flac")[: 16000 * 4], sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.inference_mode():
        out = model.generate(features, language="hi", task="translate", return_timestamps=True, max_new_tokens=8)
    assert out.shape[0] == 1 and out.shape[1] > 1


def test_tiny_en_conversion_is_english_only(model_cache: Path) -> None:
    from transformers import GenerationConfig

    path = ensure_hf_checkpoint(resolve("tiny.en", model_cache), model_cache)
    generation = GenerationConfig.from_pretrained(path)
    assert generation.is_multilingual is False and not hasattr(generation, "lang_to_id")
    assert (generation.eos_token_id, generation.decoder_start_token_id) == (50256, 50257)
    assert generation.no_timestamps_token_id == 50362
    assert json.loads((path / MARKER).read_text())["tensors"] == 168


def test_cached_conversion_returns_at_once(model_cache: Path) -> None:
    files = resolve("tiny.en", model_cache)
    path = ensure_hf_checkpoint(files, model_cache)
    stamp = (path / MARKER).stat().st_mtime_ns
    started = time.monotonic()
    assert ensure_hf_checkpoint(files, model_cache) == path
    assert time.monotonic() - started < 0.5
    assert (path / MARKER).stat().st_mtime_ns == stamp


def test_huggingface_folders_pass_through(model_cache: Path) -> None:
    path = ensure_hf_checkpoint(resolve("tiny.en", model_cache), model_cache)
    assert ensure_hf_checkpoint(ModelFiles("mine", path, "huggingface"), model_cache) == path


def test_cache_folder_names_keep_same_named_checkpoints_apart(tmp_path: Path) -> None:
    first, second = (
        ModelFiles("large", tmp_path / "a" / "large", "huggingface"),
        ModelFiles("large", tmp_path / "b" / "large", "huggingface"),
    )
    names = {cache_folder("ct2", first, tmp_path).name, cache_folder("ct2", second, tmp_path).name}
    assert len(names) == 2 and all(n.startswith("ct2-large-") and len(n) == len("ct2-large-") + 8 for n in names)
    assert cache_folder("hf", first, tmp_path) == cache_folder("hf", first, tmp_path)  # stable
    assert cache_folder("hf", resolve("tiny.en", tmp_path), tmp_path) == tmp_path / "hf-tiny.en"
    assert (
        cache_folder("hf", ModelFiles("base", tmp_path / "ct2-base", "ctranslate2"), tmp_path) == tmp_path / "hf-base"
    )
    own_base = ModelFiles("base", tmp_path / "mine" / "base", "ctranslate2")  # a folder named like a packaged model
    assert cache_folder("hf", own_base, tmp_path).name.startswith("hf-base-")


def test_concurrent_threads_share_one_conversion(tmp_path: Path) -> None:
    """In one process conversions are serialised: transformers' model loading is not thread-safe."""
    source, out = resolve("tiny.en", tmp_path).path, tmp_path / "hf-tiny"
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(ct2_to_hf(source, out))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [out, out] and is_complete(out)


def test_concurrent_processes_replace_a_stale_folder(tmp_path: Path) -> None:
    """Two racing converter processes and a half-written leftover: one complete folder, no temp dirs."""
    source = resolve("tiny.en", tmp_path).path
    out = tmp_path / "hf-tiny"
    out.mkdir()
    (out / "config.json").write_text("{}")  # leftover of an old, unfinished conversion: no marker
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(ct2_to_hf, [(source, out), (source, out)])
    assert results == [out, out]
    assert is_complete(out) and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-tiny"]
