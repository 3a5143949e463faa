"""Fake of cosyvoice/cli/cosyvoice.py: AutoModel and CosyVoice3 with the upstream signatures."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import torch

from cosyvoice.cli.frontend import CosyVoiceFrontEnd
from cosyvoice.cli.model import CosyVoice3Model

DOWNLOAD_ATTEMPTS: list[str] = []


def snapshot_download(model_id: str) -> str:
    DOWNLOAD_ATTEMPTS.append(model_id)
    raise ConnectionError(f"fake cosyvoice: would download {model_id} from ModelScope")


class CosyVoice3:
    def __init__(
        self,
        model_dir: str,
        load_trt: bool = False,
        load_vllm: bool = False,
        fp16: bool = False,
        trt_concurrent: int = 1,
    ) -> None:
        self.model_dir = model_dir
        self.fp16 = fp16
        if not os.path.exists(model_dir):
            model_dir = snapshot_download(model_dir)
        if not os.path.exists(f"{model_dir}/cosyvoice3.yaml"):
            raise ValueError(f"{model_dir}/cosyvoice3.yaml not found!")
        for name in ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v3.onnx"):
            if not os.path.exists(f"{model_dir}/{name}"):
                raise FileNotFoundError(f"{model_dir}/{name}")
        self.frontend = CosyVoiceFrontEnd(f"{model_dir}/spk2info.pt")
        self.sample_rate = 24000
        self.model = CosyVoice3Model()

    def list_available_spks(self) -> list[str]:
        return list(self.frontend.spk2info.keys())

    def add_zero_shot_spk(self, prompt_text: str, prompt_wav: Any, zero_shot_spk_id: str) -> bool:
        assert zero_shot_spk_id != "", "do not use empty zero_shot_spk_id"
        model_input = self.frontend.frontend_zero_shot("", prompt_text, prompt_wav, self.sample_rate, "")
        del model_input["text"]
        del model_input["text_len"]
        self.frontend.spk2info[zero_shot_spk_id] = model_input
        return True

    def save_spkinfo(self) -> None:
        torch.save(self.frontend.spk2info, f"{self.model_dir}/spk2info.pt")

    def inference_zero_shot(
        self,
        tts_text: Any,
        prompt_text: str,
        prompt_wav: Any,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        prompt_text = self.frontend.text_normalize(prompt_text, split=False, text_frontend=text_frontend)
        for i in self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend):
            model_input = self.frontend.frontend_zero_shot(
                i, prompt_text, prompt_wav, self.sample_rate, zero_shot_spk_id
            )
            yield from self.model.tts(**model_input, stream=stream, speed=speed)

    def inference_instruct2(
        self,
        tts_text: Any,
        instruct_text: str,
        prompt_wav: Any,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        for i in self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend):
            model_input = self.frontend.frontend_instruct2(
                i, instruct_text, prompt_wav, self.sample_rate, zero_shot_spk_id
            )
            yield from self.model.tts(**model_input, stream=stream, speed=speed)


def AutoModel(**kwargs: Any) -> CosyVoice3:
    if not os.path.exists(kwargs["model_dir"]):
        kwargs["model_dir"] = snapshot_download(kwargs["model_dir"])
    if os.path.exists(f"{kwargs['model_dir']}/cosyvoice3.yaml"):
        return CosyVoice3(**kwargs)
    raise TypeError("No valid model type found!")


__all__ = ["AutoModel", "CosyVoice3", "Generator"]
