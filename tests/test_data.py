import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sae_lab.configbase import ConfigError, build_config
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts, pack_token_stream, special_token_mask
from sae_lab.data.sources import DataSourceError, iter_documents, iter_embedded


def test_embedded_split_is_deterministic_disjoint_and_complete():
    from pydoc_data.topics import topics

    train, val = list(iter_embedded("train")), list(iter_embedded("validation"))
    assert train == list(iter_embedded("train"))
    assert 0 < len(val) < len(train)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(topics.values())


def test_embedded_unknown_split_is_refused():
    with pytest.raises(DataSourceError, match="validation"):
        list(iter_embedded("test"))


def test_packing_puts_bos_first_and_separates_documents():
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34, 35]]
    ctxs = list(pack_token_stream(docs, context_length=4, bos=1, sep=2))
    stream = [10, 11, 12, 2, 20, 21, 2, 30, 31, 32, 33, 34, 35]
    assert all(c[0] == 1 and len(c) == 4 for c in ctxs)
    assert [t for c in ctxs for t in c[1:]] == stream[: 3 * len(ctxs)]
    assert len(ctxs) == len(stream) // 3


def test_prepacked_rows_are_taken_as_contexts():
    rows = [[1, 5, 6, 7], [1, 8, 9, 10]]
    assert [c.tolist() for c in pack_token_stream(rows, 4, bos=1, sep=2)] == rows


def test_local_txt_jsonl_parquet_dir_and_glob(tmp_path, tiny_model):
    (tmp_path / "a.txt").write_text("The return statement")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "for loop", "id": 1}) + "\n")
    pq.write_table(pa.table({"text": ["while loop", "if else"]}), tmp_path / "c.parquet")
    (tmp_path / "ignored.csv").write_text("x")
    docs = list(iter_documents(DataConfig(source=str(tmp_path))))
    assert docs == ["The return statement", "for loop", "while loop", "if else"]
    assert list(iter_documents(DataConfig(source=str(tmp_path / "*.jsonl")))) == ["for loop"]


def test_pretokenized_parquet(tmp_path, tiny_model):
    pq.write_table(pa.table({"input_ids": [[5, 6, 7], [8, 9]]}), tmp_path / "t.parquet")
    cfg = DataConfig(source=str(tmp_path / "t.parquet"), context_length=3)
    ctxs = list(iter_contexts(cfg, tiny_model.tokenizer))
    eos, bos = tiny_model.tokenizer.eos_token_id, tiny_model.tokenizer.bos_token_id
    assert [c.tolist() for c in ctxs] == [[bos, 5, 6], [bos, 7, eos], [bos, 8, 9]]


def test_missing_path_and_missing_field_are_clear(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        list(iter_documents(DataConfig(source=str(tmp_path / "nope.txt"))))
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataSourceError, match=r"no field 'text'.*\['body'\]"):
        list(iter_documents(DataConfig(source=str(tmp_path / "b.jsonl"))))
    with pytest.raises(DataSourceError, match="matches no files"):
        list(iter_documents(DataConfig(source=str(tmp_path / "*.parquet"))))


def test_hub_dataset_offline_fails_clearly():
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # read at import time
    code = (
        "from sae_lab.data.sources import iter_documents; from sae_lab.data.config import DataConfig; "
        "list(iter_documents(DataConfig(source='hf:someone/some-corpus')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "DataSourceError: could not stream Hub dataset 'someone/some-corpus'" in proc.stderr
    assert "while offline" in proc.stderr and "data.source=embedded" in proc.stderr


def test_max_tokens_and_special_mask(tiny_model):
    cfg = DataConfig(context_length=16, max_tokens=100)
    ctxs = np.stack(list(iter_contexts(cfg, tiny_model.tokenizer)))
    assert ctxs.shape == (7, 16)
    mask = special_token_mask(ctxs, tiny_model.tokenizer)
    assert mask[:, 0].all()
    eos = tiny_model.tokenizer.eos_token_id
    assert (mask == np.isin(ctxs, [tiny_model.tokenizer.bos_token_id, eos, tiny_model.tokenizer.pad_token_id])).all()


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="context_length"):
        build_config(DataConfig, {"context_length": 0})
    with pytest.raises(ConfigError, match="unknown key 'sourse'.*Did you mean 'source'"):
        build_config(DataConfig, {"sourse": "embedded"})
    with pytest.raises(ConfigError, match=r"separator.*'eos'"):
        build_config(DataConfig, {"separator": "newline"})
