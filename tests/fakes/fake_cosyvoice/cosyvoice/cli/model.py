"""Fake of cosyvoice/cli/model.py (CosyVoice3Model): same attributes, same methods, same faults."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import torch

SAMPLES_PER_TOKEN = 960  # 25 speech tokens per second at 24 kHz
SPEECH_TOKENS_PER_TEXT_TOKEN = 2
TIMING = {"token_seconds": 0.002}  # how long the fake LLM takes per speech token
STATS = {"llm_jobs_running": 0, "llm_tokens": 0, "max_llm_jobs_running": 0}
PROMPT_TEXTS: list[list[int]] = []  # each LLM job's prompt text tokens (the fake's record, as STATS)
_STATS_LOCK = threading.Lock()


class _Flow:
    pre_lookahead_len = 3


class _FakeLLM:
    """Speech tokens from text tokens; bistream pulls text tokens from a generator as they come."""

    def _speech_tokens(self, text_tokens: Iterator[int]) -> Iterator[int]:
        for token in text_tokens:
            for k in range(SPEECH_TOKENS_PER_TEXT_TOKEN):
                time.sleep(TIMING["token_seconds"])
                with _STATS_LOCK:
                    STATS["llm_tokens"] += 1
                yield (token + k) % 6561

    def inference(self, text: torch.Tensor, **kwargs: Any) -> Iterator[int]:
        return self._speech_tokens(int(t) for t in text.flatten().tolist())

    def inference_bistream(self, text: Iterator[torch.Tensor], **kwargs: Any) -> Iterator[int]:
        return self._speech_tokens(int(t.flatten()[0]) for t in text)


class CosyVoice3Model:
    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.llm = _FakeLLM()
        self.flow = _Flow()
        self.token_hop_len = 25
        self.token_max_hop_len = 4 * self.token_hop_len
        self.stream_scale_factor = 2
        self.lock = threading.Lock()
        self.silent_tokens: list[int] = []
        self.tts_speech_token_dict: dict[str, Any] = {}
        self.llm_end_dict: dict[str, bool] = {}
        self.hift_cache_dict: dict[str, Any] = {}

    def llm_job(
        self,
        text: Any,
        prompt_text: torch.Tensor,
        llm_prompt_speech_token: torch.Tensor,
        llm_embedding: torch.Tensor,
        uuid: str,
    ) -> None:
        with _STATS_LOCK:
            STATS["llm_jobs_running"] += 1
            PROMPT_TEXTS.append([int(t) for t in prompt_text.flatten().tolist()])
            STATS["max_llm_jobs_running"] = max(STATS["max_llm_jobs_running"], STATS["llm_jobs_running"])
        try:
            if isinstance(text, Generator):
                tokens = self.llm.inference_bistream(text=text, prompt_text=prompt_text)
            else:
                tokens = self.llm.inference(text=text, prompt_text=prompt_text)
            for i in tokens:
                self.tts_speech_token_dict[uuid].append(i)
            self.llm_end_dict[uuid] = True
        finally:  # the fake counts its running jobs; upstream has no such bookkeeping
            with _STATS_LOCK:
                STATS["llm_jobs_running"] -= 1

    def token2wav(
        self,
        token: torch.Tensor,
        prompt_token: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        token_offset: int,
        uuid: str,
        stream: bool = False,
        finalize: bool = False,
        speed: float = 1.0,
    ) -> torch.Tensor:
        if self.hift_cache_dict[uuid] is not None and speed != 1.0:
            raise AssertionError("speed change only support non-stream inference mode")
        end = token.shape[1] if finalize else token.shape[1] - self.flow.pre_lookahead_len
        n = max(0, end - token_offset)
        t = np.arange(n * SAMPLES_PER_TOKEN) / 24000.0
        audio = (0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        if speed != 1.0:
            audio = audio[:: max(1, round(speed))] if speed > 1 else np.repeat(audio, round(1 / speed))
        self.hift_cache_dict[uuid] = {"offset": token_offset + n}
        return torch.from_numpy(audio).unsqueeze(0)

    def tts(
        self,
        text: Any = None,
        flow_embedding: Any = None,
        llm_embedding: Any = None,
        prompt_text: Any = None,
        llm_prompt_speech_token: Any = None,
        flow_prompt_speech_token: Any = None,
        prompt_speech_feat: Any = None,
        source_speech_token: Any = None,
        stream: bool = False,
        speed: float = 1.0,
        **kwargs: Any,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Upstream's loop, faults kept: sleep(0.1) polling, shared token_hop_len mutated, no finally."""
        this_uuid = str(uuid.uuid1())
        prompt = flow_prompt_speech_token if flow_prompt_speech_token is not None else torch.zeros(1, 0)
        with self.lock:
            self.tts_speech_token_dict[this_uuid], self.llm_end_dict[this_uuid] = [], False
            self.hift_cache_dict[this_uuid] = None
        job_args = (text, prompt_text, llm_prompt_speech_token, llm_embedding, this_uuid)
        p = threading.Thread(target=self.llm_job, args=job_args)
        p.start()
        if stream:
            token_offset = 0
            pad = int(np.ceil(prompt.shape[1] / self.token_hop_len) * self.token_hop_len - prompt.shape[1])
            while True:
                time.sleep(0.1)
                hop = self.token_hop_len + pad if token_offset == 0 else self.token_hop_len
                tokens = self.tts_speech_token_dict[this_uuid]
                if len(tokens) - token_offset >= hop + self.flow.pre_lookahead_len:
                    chunk = torch.tensor(tokens[: token_offset + hop + self.flow.pre_lookahead_len]).unsqueeze(0)
                    speech = self.token2wav(
                        chunk,
                        prompt,
                        prompt_speech_feat,
                        flow_embedding,
                        token_offset,
                        this_uuid,
                        stream=True,
                        finalize=False,
                    )
                    token_offset += hop
                    self.token_hop_len = min(self.token_max_hop_len, self.token_hop_len * self.stream_scale_factor)
                    yield {"tts_speech": speech.cpu()}
                if self.llm_end_dict[this_uuid] and len(tokens) - token_offset < hop + self.flow.pre_lookahead_len:
                    break
            p.join()
            chunk = torch.tensor(self.tts_speech_token_dict[this_uuid]).unsqueeze(0)
            yield {
                "tts_speech": self.token2wav(
                    chunk, prompt, prompt_speech_feat, flow_embedding, token_offset, this_uuid, finalize=True
                ).cpu()
            }
        else:
            p.join()
            chunk = torch.tensor(self.tts_speech_token_dict[this_uuid]).unsqueeze(0)
            yield {
                "tts_speech": self.token2wav(
                    chunk, prompt, prompt_speech_feat, flow_embedding, 0, this_uuid, finalize=True, speed=speed
                ).cpu()
            }
        with self.lock:
            self.tts_speech_token_dict.pop(this_uuid)
            self.llm_end_dict.pop(this_uuid)
            self.hift_cache_dict.pop(this_uuid)
