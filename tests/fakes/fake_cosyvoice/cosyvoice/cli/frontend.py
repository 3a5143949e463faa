"""Fake of cosyvoice/cli/frontend.py: text "tokens" are code points; prompt features are small tensors."""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import soundfile as sf
import torch

STATS = {"prompt_extractions": 0}
_STATS_LOCK = threading.Lock()


def load_wav(path: Any, target_sr: int) -> torch.Tensor:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if sr != target_sr:
        idx = np.linspace(0, mono.size - 1, int(mono.size * target_sr / sr)).astype(np.int64)
        mono = mono[idx]
    return torch.from_numpy(np.ascontiguousarray(mono)).unsqueeze(0)


class CosyVoiceFrontEnd:
    def __init__(self, spk2info: str = "", allowed_special: str = "all") -> None:
        self.device = torch.device("cpu")
        self.allowed_special = allowed_special
        if os.path.exists(spk2info):
            self.spk2info = torch.load(spk2info, map_location=self.device, weights_only=True)
        else:
            self.spk2info = {}

    def _extract_text_token(self, text: Any) -> Any:
        if isinstance(text, Generator):
            return self._extract_text_token_generator(text), torch.tensor([0], dtype=torch.int32)
        token = torch.tensor([[ord(c) % 6561 for c in text]], dtype=torch.int32)
        return token, torch.tensor([token.shape[1]], dtype=torch.int32)

    def _extract_text_token_generator(self, text_generator: Iterator[str]) -> Iterator[torch.Tensor]:
        for text in text_generator:
            token, _ = self._extract_text_token(text)
            for i in range(token.shape[1]):
                yield token[:, i : i + 1]

    def text_normalize(self, text: Any, split: bool = True, text_frontend: bool = True) -> Any:
        if isinstance(text, Generator):
            return [text]
        text = text.strip()
        if not split:
            return text
        pieces, current = [], ""
        for char in text:
            current += char
            if char in ".!?。！？":
                pieces.append(current.strip())
                current = ""
        if current.strip():
            pieces.append(current.strip())
        return [p for p in pieces if any(ch.isalnum() for ch in p)]

    def frontend_zero_shot(
        self, tts_text: Any, prompt_text: str, prompt_wav: Any, resample_rate: int, zero_shot_spk_id: str
    ) -> dict[str, Any]:
        tts_text_token, tts_text_token_len = self._extract_text_token(tts_text)
        if zero_shot_spk_id == "":
            with _STATS_LOCK:
                STATS["prompt_extractions"] += 1
            prompt_text_token, prompt_text_token_len = self._extract_text_token(prompt_text)
            speech = load_wav(prompt_wav, 16000)
            n_tokens = max(1, speech.shape[1] // 640)  # 25 tokens per second
            speech_token = torch.arange(n_tokens, dtype=torch.int32).unsqueeze(0) % 6561
            speech_token_len = torch.tensor([n_tokens], dtype=torch.int32)
            speech_feat = torch.zeros(1, 2 * n_tokens, 80)
            speech_feat_len = torch.tensor([2 * n_tokens], dtype=torch.int32)
            embedding = torch.full((1, 192), float(speech.abs().mean()))
            model_input = {
                "prompt_text": prompt_text_token,
                "prompt_text_len": prompt_text_token_len,
                "llm_prompt_speech_token": speech_token,
                "llm_prompt_speech_token_len": speech_token_len,
                "flow_prompt_speech_token": speech_token,
                "flow_prompt_speech_token_len": speech_token_len,
                "prompt_speech_feat": speech_feat,
                "prompt_speech_feat_len": speech_feat_len,
                "llm_embedding": embedding,
                "flow_embedding": embedding,
            }
        else:
            model_input = {**self.spk2info[zero_shot_spk_id]}
        model_input["text"] = tts_text_token
        model_input["text_len"] = tts_text_token_len
        return model_input

    def frontend_instruct2(
        self, tts_text: Any, instruct_text: str, prompt_wav: Any, resample_rate: int, zero_shot_spk_id: str
    ) -> dict[str, Any]:
        model_input = self.frontend_zero_shot(tts_text, instruct_text, prompt_wav, resample_rate, zero_shot_spk_id)
        del model_input["llm_prompt_speech_token"]
        del model_input["llm_prompt_speech_token_len"]
        return model_input
