"""A tiny random-weight Fun-ASR-Nano model directory with the real layout (config.yaml, model.pt, Qwen3-0.6B/).

The same component names as Fun-ASR-Nano-2512 (FunASRNano, SenseVoiceEncoderSmall, a
Transformer adaptor, a Qwen3 LLM, WavFrontend, HuggingfaceTokenizer), shrunk to a few
thousand parameters, so that funasr's real loading and decoding code runs in ~1 s on a CPU.
Needs torch, transformers and tokenizers (the funasr test environment).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

_LLM_DIM = 32
_ENC_DIM = 16


def _tokenizer(directory: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|startofspeech|>", "<|endofspeech|>"]}
    )
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


def _qwen3(directory: Path, vocab_size: int, eos_id: int) -> None:
    from transformers import Qwen3Config

    Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=_LLM_DIM,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=4096,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
        tie_word_embeddings=True,
    ).save_pretrained(directory)


def build_tiny_fun_asr_nano(directory: Path) -> Path:
    """Write the model directory; returns it. Deterministic weights (seeded)."""
    import torch

    qwen = directory / "Qwen3-0.6B"
    qwen.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(qwen)
    from transformers import AutoTokenizer

    eos_id = AutoTokenizer.from_pretrained(qwen).convert_tokens_to_ids("<|im_end|>")
    _qwen3(qwen, vocab, eos_id)
    config = {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {
            "output_size": _ENC_DIM,
            "attention_heads": 2,
            "linear_units": 32,
            "num_blocks": 2,
            "tp_blocks": 1,
            "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0,
            "attention_dropout_rate": 0.0,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 3,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "freeze": True,
        },
        "llm": "Qwen3-0.6b",
        "llm_conf": {
            "hub": "hf",
            "freeze": True,
            "llm_dtype": "fp32",
            "init_param_path": "Qwen3-0.6B",
            "use_lora": False,
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "ffn_dim": 32,
            "llm_dim": _LLM_DIM,
            "encoder_dim": _ENC_DIM,
            "n_layer": 1,
            "freeze": True,
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
        },
        "tokenizer": "HuggingfaceTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "init_param_path": "Qwen3-0.6B"},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (directory / "configuration.json").write_text(
        json.dumps(
            {
                "framework": "pytorch",
                "task": "auto-speech-recognition",
                "model": {"type": "funasr"},
                "file_path_metas": {"init_param": "model.pt", "config": "config.yaml"},
            }
        )
    )
    torch.manual_seed(0)
    import funasr.models.fun_asr_nano.model  # noqa: F401  (registers FunASRNano)
    from funasr.register import tables

    model_class = tables.model_classes.get("FunASRNano")
    kwargs = dict(config)
    kwargs["llm_conf"] = {**config["llm_conf"], "init_param_path": str(qwen)}
    kwargs["input_size"] = 80 * 7
    model = model_class(**{k: v for k, v in kwargs.items() if k != "model"}, vocab_size=vocab)
    torch.save({"state_dict": model.state_dict()}, directory / "model.pt")
    return directory
