"""Write a GGUF file holding the first N transformer blocks of a Llama-family GGUF model (default: the embedded
SmolLM2-135M-Instruct), tensors copied byte for byte in their quantised form.

    python experiments/gguf_first_blocks.py OUT.gguf --blocks 8 [--source PATH.gguf]

Why: a remote machine that receives at most 64 MiB per call (the GPU machine of experiments/bench_gpu.py) cannot
take the 98 MB embedded model, but activations at ``blocks.{N-1}`` only need the embedding and blocks 0..N-1
(8 blocks: 48 MB). ``sae_lab.models.load_model("OUT.gguf")`` loads the result like any GGUF file; its activations
at those blocks equal the full model's (tests/test_bench_gpu.py checks this). Its output head is the tied
embedding after block N-1, so its logits are not the full model's: use it for activations only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _kept(tensor_name: str, blocks: int) -> bool:
    return not tensor_name.startswith("blk.") or int(tensor_name.split(".")[1]) < blocks


def write_first_blocks(source: Path, out: Path, blocks: int) -> int:
    """Copy ``source`` to ``out`` keeping the first ``blocks`` blocks; returns the bytes written."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    count_key = f"{arch}.block_count"
    total = int(reader.fields[count_key].contents())
    if not 1 <= blocks <= total:
        raise SystemExit(f"--blocks must be between 1 and the model's {total} blocks (got {blocks})")
    writer = GGUFWriter(out, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by GGUFWriter itself
        if name == count_key:
            writer.add_uint32(count_key, blocks)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        if _kept(t.name, blocks):
            data = np.asarray(t.data)
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--source", type=Path, default=None, help="a GGUF file (default: the embedded model's)")
    a = ap.parse_args()
    from sae_lab.models import embedded_gguf_path

    source = a.source or embedded_gguf_path()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    size = write_first_blocks(source, a.out, a.blocks)
    print(f"wrote {a.out}: the first {a.blocks} blocks of {source.name}, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
