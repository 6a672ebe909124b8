"""Base-model directories: which files an uploaded base may hold, its identity hash, its validation.

Importing this module loads neither torch nor Django: the web side hashes and pre-checks uploads
with `base_hash` and `base_files_check`; `validate_base` (which loads the model, so imports torch and
transformers when called) runs only inside the sandbox, as `python -m training.runner validate-base`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Exact names, plus *.safetensors. Everything else (pickles: *.bin, *.pt, *.pth, *.pkl, *.ckpt;
# code: *.py; archives) is refused, so a base can never carry something that executes on load.
ALLOWED_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
    }
)
REQUIRED_NAMES = ("config.json", "tokenizer.json")
DEFAULT_MAX_BYTES = 8 * 1024**3
MAX_FILES = 64
_CHUNK = 1024 * 1024


def base_files_check(directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Problems with the files of a base directory (names, kinds, sizes); empty when acceptable."""
    directory = Path(directory)
    if directory.is_symlink() or not directory.is_dir():
        return ["the base is not a directory"]
    entries = sorted(directory.iterdir())
    if len(entries) > MAX_FILES:
        return [f"more than {MAX_FILES} files"]
    problems: list[str] = []
    total = 0
    for entry in entries:
        name = entry.name[:100]
        if entry.is_symlink():
            problems.append(f"{name}: links are not allowed")
        elif entry.is_dir():
            problems.append(f"{name}: subdirectories are not allowed")
        elif not entry.is_file():
            problems.append(f"{name}: not a regular file")
        elif entry.name not in ALLOWED_NAMES and entry.suffix != ".safetensors":
            problems.append(
                f"{name}: not an allowed file (config, safetensors weights and tokenizer files only)"
            )
        else:
            total += entry.stat().st_size
    if total > max_bytes:
        problems.append(f"the base holds {total} bytes, over the limit of {max_bytes}")
    names = {entry.name for entry in entries}
    for required in REQUIRED_NAMES:
        if required not in names:
            problems.append(f"{required} is missing")
    if not any(name.endswith(".safetensors") for name in names):
        problems.append("no *.safetensors weights")
    if "config.json" in names and not problems:
        try:
            config = json.loads((directory / "config.json").read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return ["config.json is not valid JSON"]
        if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
            problems.append("config.json has no model_type")
        elif config.get("auto_map"):
            problems.append("config.json asks for custom code (auto_map): not allowed")
    return problems


def base_hash(directory: Path) -> str:
    """sha256 over the sorted file names and contents: a base is identified by the hash of its files.

    Each file contributes its name, a NUL, its size (8 bytes, big-endian) and its bytes, in name
    order, so renaming, adding or changing any file changes the hash.
    :raises ValueError: when the directory holds a subdirectory or a link.
    """
    digest = hashlib.sha256()
    for entry in sorted(Path(directory).iterdir(), key=lambda p: p.name.encode()):
        if entry.is_symlink() or not entry.is_file():
            raise ValueError(f"{entry.name[:100]}: only regular files can be hashed")
        digest.update(entry.name.encode() + b"\0" + entry.stat().st_size.to_bytes(8, "big"))
        with entry.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def validate_base(directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """The `base` event: file rules, then a real load with transformers (safetensors only, offline)."""
    event: dict[str, Any] = {
        "event": "base",
        "ok": False,
        "architecture": None,
        "model_type": None,
        "parameters": None,
        "causal": False,
        "sha256": None,
        "positions": None,
        "detail": "",
    }
    problems = base_files_check(directory, max_bytes=max_bytes)
    if problems:
        event["detail"] = "; ".join(problems)[:1000]
        return event
    event["sha256"] = base_hash(directory)
    from training.runner.models import load_pretrained  # torch: only here, inside the sandbox

    try:
        model, causal = load_pretrained(Path(directory))
    except Exception as error:  # noqa: BLE001 - untrusted files fail in many ways
        event["detail"] = f"transformers cannot load it: {type(error).__name__}: {str(error)[:300]}"
        return event
    problems = config_limit_problems(model.config.to_dict())
    problems += _tokenizer_problems(directory, model, causal)
    if problems:
        event["detail"] = "; ".join(problems)[:1000]
        return event
    event.update(
        ok=True,
        architecture=type(model).__name__,
        model_type=model.config.model_type,
        parameters=sum(p.numel() for p in model.parameters()),
        causal=causal,
        positions=base_positions(model.config.to_dict()),
        detail="loaded with safetensors weights",
    )
    return event


def _tokenizer_problems(directory: Path, model: Any, causal: bool) -> list[str]:
    """What would fail only once records flow: ids past the embeddings, no record separator."""
    from tokenizers import Tokenizer  # the library the runner trains with (no torch)

    try:
        tokenizer = Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))
    except Exception as error:  # noqa: BLE001 - untrusted files fail in many ways
        return [f"tokenizer.json: cannot be loaded ({type(error).__name__})"]
    rows = model.get_input_embeddings().num_embeddings
    problems = []
    if tokenizer.get_vocab_size() > rows:
        problems.append(
            f"tokenizer.json: {tokenizer.get_vocab_size()} tokens, more than the {rows} embedding rows"
        )
    eos = model.config.eos_token_id
    if causal and not isinstance(eos[0] if isinstance(eos, list) and eos else eos, int):
        problems.append("config.json: eos_token_id is missing (records are separated by it)")
    return problems


# The smallest max_seq_len a job may ask for (spec.py) is 8 positions.
MIN_POSITIONS = 8
_POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def base_positions(config: dict[str, Any]) -> int | None:
    """How many positions the model can take (None when its config does not say)."""
    for key in _POSITION_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def config_limit_problems(config: dict[str, Any]) -> list[str]:
    """What config.json alone tells about a base that would only fail mid-training."""
    problems: list[str] = []
    positions = base_positions(config)
    if positions is not None and positions < MIN_POSITIONS:
        problems.append(f"config.json: {positions} positions, fewer than the {MIN_POSITIONS} a job needs")
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
        return [*problems, "config.json: vocab_size is missing or not a positive integer"]
    # The runner separates and pads records with these; GPT2Config's default bos id (50256) is
    # unused in training, so a small vocabulary with that default is still a usable base.
    for name in ("eos_token_id", "pad_token_id"):
        value = config.get(name)
        ids = value if isinstance(value, list) else [value]
        if any(
            i is not None and (not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab)
            for i in ids
        ):
            # Training would fail later with an IndexError deep in the embedding.
            problems.append(f"config.json: {name} {str(value)[:40]} is outside the vocabulary (size {vocab})")
    return problems
