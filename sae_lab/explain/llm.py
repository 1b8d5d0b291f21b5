"""Chat models that write and judge explanations: a local Hugging Face causal LM (batched greedy generation) and
an OpenAI-compatible chat-completions endpoint (standard library HTTP, no extra dependency)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch

from sae_lab.explain.config import LLMConfig

Chat = list[dict]  # [{"role": "system" | "user" | "assistant", "content": str}, ...]


class ExplainError(RuntimeError):
    """An explainer or scorer that cannot be used (unreachable endpoint, missing key, empty answers); the message
    names the problem and the fix, and says that what was already written is kept."""


class ChatModel(Protocol):
    label: str

    def chat(self, chats: list[Chat], max_new_tokens: int) -> list[str]:
        """One answer per chat (greedy unless the config's temperature says otherwise)."""


def make_chat_model(cfg: LLMConfig) -> ChatModel:
    """The model a config names (the local one is loaded here; the endpoint is only contacted when used)."""
    return OpenAIChatModel(cfg) if cfg.kind == "openai" else LocalChatModel(cfg)


# ---- local Hugging Face model --------------------------------------------------------------------------


def load_causal_lm(name: str, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer) of a Hugging Face causal LM: 'embedded', a local directory or a Hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sae_lab import models

    if name == models.EMBEDDED_NAME:
        model, tok, _ = models.load_embedded_hf()
    else:
        why = None if os.path.isdir(name) or models.cached_on_disk(name) else models.hub_unreachable()
        if why is not None:
            raise ExplainError(
                f"explainer model '{name}' is not on this machine and the Hugging Face Hub is "
                f"unreachable ({why}); use explainer.model=embedded (offline) or a local model dir"
            )
        model, tok = AutoModelForCausalLM.from_pretrained(name, dtype=dtype), AutoTokenizer.from_pretrained(name)
    if getattr(tok, "chat_template", None) is None:
        raise ExplainError(f"explainer model '{name}' has no chat template: use an instruction-tuned (chat) model")
    return model.to(device=device, dtype=dtype).eval(), tok


class LocalChatModel:
    """A local causal LM: chats rendered with its chat template, generated in padded batches (left padding)."""

    def __init__(self, cfg: LLMConfig):
        from sae_lab.devices import check_available, resolve_device
        from sae_lab.models import resolve_dtype

        self.cfg, self.label = cfg, cfg.label
        self.device = resolve_device(cfg.device)
        check_available(self.device, "explainer.device")
        self.model, self.tok = load_causal_lm(cfg.model, self.device, resolve_dtype(cfg.dtype))
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token

    def chat(self, chats: list[Chat], max_new_tokens: int) -> list[str]:
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        out: list[str] = [""] * len(texts)
        bs = self.cfg.batch_size
        for b in range(0, len(order), bs):
            idx = order[b : b + bs]
            for i, answer in zip(idx, self._generate([texts[i] for i in idx], max_new_tokens)):
                out[i] = answer
        return out

    @torch.inference_mode()
    def _generate(self, texts: list[str], max_new_tokens: int) -> list[str]:
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = self.cfg.temperature > 0
        gen = self.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=self.cfg.temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tok.pad_token_id,
        )
        return self.tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


# ---- OpenAI-compatible endpoint ------------------------------------------------------------------------


class OpenAIChatModel:
    """POST ``{base_url}/chat/completions`` (the OpenAI format that vLLM, llama.cpp's server and APIs speak)."""

    def __init__(self, cfg: LLMConfig):
        self.cfg, self.label = cfg, cfg.label
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.key = None
        if cfg.api_key_env:
            self.key = os.environ.get(cfg.api_key_env)
            if not self.key:
                raise ExplainError(
                    f"the API key variable {cfg.api_key_env} (explainer/scorer api_key_env) is not set"
                    f" or empty: export {cfg.api_key_env}=... , or set api_key_env=null for a server "
                    "that needs no key"
                )

    def chat(self, chats: list[Chat], max_new_tokens: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.cfg.batch_size) as pool:
            return list(pool.map(lambda c: self._one(c, max_new_tokens), chats))

    def _one(self, chat: Chat, max_new_tokens: int) -> str:
        body = json.dumps(
            {
                "model": self.cfg.model,
                "messages": chat,
                "max_tokens": max_new_tokens,
                "temperature": self.cfg.temperature,
            }
        ).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as r:
                reply = json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            raise ExplainError(
                f"the endpoint {self.url} answered HTTP {e.code} {e.reason}: {detail} (check base_url, "
                "model and the API key)"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ExplainError(
                f"cannot reach the endpoint {self.url} ({reason}); check base_url and that the server is running"
            ) from None
        except ValueError as e:
            raise ExplainError(
                f"the endpoint {self.url} did not answer in JSON ({e}); is base_url an OpenAI-compatible server (…/v1)?"
            ) from None
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ExplainError(
                f"the endpoint {self.url} answered without choices[0].message.content: {str(reply)[:300]}"
            ) from None
