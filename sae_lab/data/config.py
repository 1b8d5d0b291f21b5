"""The data section of a config: where text comes from and how it is packed into contexts."""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sae_lab.configbase import StrictModel


class DataConfig(StrictModel):
    """Where text comes from and how it becomes fixed-length contexts.

    ``source`` is one of:
      - ``embedded``: Python's own English documentation (``pydoc_data.topics``), offline;
      - a local path, directory or glob of ``.txt`` / ``.jsonl`` / ``.parquet`` files;
      - ``hf:<dataset name>``: a Hugging Face Hub dataset, streamed (needs network).
    """

    source: str = "embedded"
    split: str = Field("train", description="embedded: train|validation; hub: the split name")
    kind: Literal["auto", "text", "pretokenized"] = Field(
        "auto", description="pretokenized reads token ids from `tokens_field`; auto picks it when present"
    )
    text_field: str = "text"
    tokens_field: str = "input_ids"
    hub_config: str | None = Field(None, description="the Hub dataset's config (subset) name")
    context_length: int = Field(128, ge=2, le=1_000_000)
    max_tokens: int | None = Field(None, ge=1, description="stop after this many tokens (whole contexts)")
    separator: Literal["eos", "bos", "none"] = Field("eos", description="token placed between documents")
    exclude_special: bool = Field(True, description="mask BOS/EOS/pad positions out of training activations")
    encoding: str = Field(
        "utf-8",
        description="text encoding of local .txt/.jsonl files; undecodable bytes are "
        "refused, naming the file (and line)",
    )

    @field_validator("source")
    @classmethod
    def _source_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("data.source is empty; use 'embedded', a local path/glob, or 'hf:<dataset>'")
        return v.strip()

    @model_validator(mode="after")
    def _say_when_rounding(self):
        if self.max_tokens is not None and self.max_tokens % self.context_length:
            warnings.warn(
                f"data.max_tokens={self.max_tokens} is not a multiple of data.context_length="
                f"{self.context_length}: rounded up to {self.max_contexts * self.context_length} tokens "
                f"({self.max_contexts} whole contexts)",
                stacklevel=2,
            )
        return self

    @property
    def max_contexts(self) -> int | None:
        if self.max_tokens is None:
            return None
        return -(-self.max_tokens // self.context_length)
