"""Hugging Face folder format, both ways, and resolving a MODEL argument to a folder.

A folder holds `config.json`, `model.safetensors` (or a legacy `pytorch_model.bin`, read with
`weights_only=True`), `generation_config.json` and the tokenizer files. Hugging Face stores the
attention and MLP matrices as `Conv1D` weights of shape (in, out); our `nn.Linear` wants
(out, in), so those four matrices per block are transposed on the way in and out. A MODEL may
also be a LoRA adapter folder (`gpt2kit.formats.peft`): it loads as its base with the adapter
merged in.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gpt2kit import runs
from gpt2kit.errors import UserError
from gpt2kit.formats.peft import (
    ADAPTER_CONFIG,
    BASE_REF,
    Adapter,
    BaseRef,
    apply_adapter,
    is_adapter_folder,
    read_adapter,
    save_adapter,
)
from gpt2kit.fsutil import chmod_like_new_file
from gpt2kit.model import GPT2, GPT2Config
from gpt2kit.model.lora import lora_spec
from gpt2kit.tokenizer import Tokenizer, gpt2_tokenizer, load_tokenizer

# Conv1D weights in Hugging Face's GPT-2 (stored transposed relative to nn.Linear).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some older checkpoints carry; they are recomputed, never learned.
_SKIP_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_HUB_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
]


def resolve_model(spec: str | Path) -> Path:
    """Turn a MODEL argument into a local Hugging Face-format folder (or LoRA adapter folder).

    `spec` is a Hugging Face-format folder, a PEFT LoRA adapter folder (`adapter_config.json`,
    see `gpt2kit.formats.peft`), a run folder from `gpt2kit train` (its `best/`, else `final/`:
    model or adapter folders), or a hub id such as `gpt2` or `openai-community/gpt2-medium`,
    downloaded (or found in the local cache) with `huggingface_hub`. A path that does not exist
    (one starting with `.`, `/` or `~`, with two slashes or more, or under an existing folder)
    is refused without asking the hub, naming the closest existing folders.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                f"{path} is a file; MODEL must be a model folder, a run folder or a hub id."
            )
        if _is_model_folder(path):
            return path
        for model in runs.RunDir(path).models():
            if _is_model_folder(model):
                return model
        raise UserError(
            f"{path} is not a model folder: it has no config.json or {ADAPTER_CONFIG} (nor a "
            f"{runs.BEST}/ or {runs.FINAL}/ model from `gpt2kit train`). Point MODEL at a folder "
            "made by save_pretrained or gpt2kit."
        )
    # A hub id is NAME or OWNER/NAME; anything else, or an OWNER that is a local folder, is a
    # path the user mistyped, and asking the hub for it would only be a wasted network call.
    looks_local = (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or "\\" in text
        or ("/" in text and path.parent.is_dir())
    )
    if looks_local:
        raise UserError(
            f"Model folder {text} does not exist{_did_you_mean(text)}. Pass an existing model "
            "folder, a run folder from `gpt2kit train`, or a hub id such as gpt2."
        )
    try:
        return download_from_hub(text)
    except UserError as e:
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError

        # What snapshot_download raises when it may not, or cannot, reach the hub and the id
        # is not in the local cache either.
        if not isinstance(e.__context__, LocalEntryNotFoundError):
            raise
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "it could not be reached"
        raise UserError(
            f"{text!r} is neither a local folder{_did_you_mean(text)} nor reachable on the "
            f"Hugging Face Hub ({why}, and it is not in the local cache). Pass an existing model "
            "folder or run folder, go online (without HF_HUB_OFFLINE) to download a hub model, "
            "or train from scratch with --init scratch."
        ) from None


def _is_model_folder(path: Path) -> bool:
    """Whether `path` holds a model: a Hugging Face folder, or a LoRA adapter for one."""
    return (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file()


def _did_you_mean(text: str) -> str:
    """`" (did you mean X?)"` for existing folders like the path `text`: the first part of it
    that does not exist replaced by the closest names there; "" when none is close."""
    parts = text.split("/")
    for i in range(len(parts) - 1, -1, -1):
        base = "/".join(parts[:i]) if i else "."
        folder = Path(base or "/").expanduser()
        if not parts[i] or not folder.is_dir():
            continue
        try:
            names = [entry.name for entry in folder.iterdir() if entry.is_dir()]
        except OSError:
            return ""
        close = difflib.get_close_matches(parts[i], names, n=3)
        guesses = ["/".join([*parts[:i], name, *parts[i + 1 :]]) for name in close]
        guesses = [g for g in guesses if Path(g).expanduser().is_dir()]
        return f" (did you mean {' or '.join(guesses)}?)" if guesses else ""
    return ""


def download_from_hub(repo_id: str) -> Path:
    """Download (or reuse from the local cache) the files gpt2kit needs from a hub model."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:  # pragma: no cover - huggingface_hub is a core dependency
        raise UserError(
            "Resolving hub ids needs huggingface_hub: pip install huggingface_hub"
        ) from None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, "*.safetensors"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(
                snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, "pytorch_model.bin"])
            )
    except HFValidationError:
        raise UserError(
            f"{repo_id!r} is neither an existing folder nor a valid Hugging Face Hub id."
        ) from None
    except Exception as e:
        raise UserError(
            f"Could not get {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'}). Check the network and the "
            "name, pass a local model folder instead, or train from scratch with --init scratch."
        ) from None
    return folder


def _read_state(folder: Path) -> dict[str, torch.Tensor]:
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(shard)))
        return state
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise UserError(
        f"{folder} has no model.safetensors (nor pytorch_model.bin): no weights to load."
    )


def _from_hf_names(state: dict[str, torch.Tensor], config: GPT2Config) -> dict[str, torch.Tensor]:
    """Map Hugging Face parameter names and layouts to ours."""
    out = {}
    for name, tensor in state.items():
        if name.endswith(_SKIP_SUFFIXES):
            continue
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # the original `gpt2` checkpoints omit the prefix
        if name.endswith(_CONV1D):
            tensor = tensor.t()  # a view; load_model copies it into a fresh (out, in) layout
        out[name] = tensor
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def load_model(
    spec: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    merge: bool = True,
) -> tuple[GPT2, Tokenizer, Path]:
    """Load a model and its tokenizer from a MODEL argument (see `resolve_model`).

    Returns `(model, tokenizer, folder)`, the model in eval mode on `device` in `dtype`. An
    adapter folder loads its base model (checked against the recorded SHA-256) and the base's
    tokenizer, with the adapter merged into the weights, or, without `merge`, kept as
    trainable LoRA layers (see `gpt2kit.formats.peft.apply_adapter`).
    """
    folder = resolve_model(spec)
    if is_adapter_folder(folder):
        adapter = read_adapter(folder)
        base_folder = _adapter_base(adapter, folder)
        model, tokenizer, _ = load_model(base_folder, device=device, dtype=dtype)
        return apply_adapter(model, adapter, folder, base_folder, merge), tokenizer, folder
    try:
        config_dict = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"Could not read {folder / 'config.json'}: {e}") from None
    config = GPT2Config.from_hf_dict(config_dict)
    state = _from_hf_names(_read_state(folder), config)
    with torch.device("meta"):
        model = GPT2(config)
    expected = {
        k for k in model.state_dict() if not (config.tie_word_embeddings and k == "lm_head.weight")
    }
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(
                f"missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
            )
        if unexpected:
            problems.append(
                f"unexpected: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
            )
        raise UserError(f"The weights in {folder} do not match its config.json:", problems)
    for name, tensor in state.items():
        shape = model.get_parameter(name).shape
        if tensor.shape != shape:
            raise UserError(
                f"The weight {name} in {folder} has shape {tuple(tensor.shape)}, "
                f"but config.json implies {tuple(shape)}."
            )
    # Fresh allocations, as a newly built model has: a tensor read from a file can sit at any
    # address, and CPU BLAS results depend on alignment, so a resumed run would drift by ULPs.
    fresh = {
        name: torch.empty(t.shape, dtype=dtype, device=device).copy_(t) for name, t in state.items()
    }
    model.load_state_dict(fresh, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    model.eval()
    tokenizer = _folder_tokenizer(folder, config)
    return model, tokenizer, folder


def base_ref(spec: str, folder: str | Path) -> BaseRef:
    """The reference an adapter keeps to its base: the MODEL argument `spec` (a hub id when it is
    not a local path), the folder it resolved to, and the SHA-256 of its weights."""
    folder = Path(folder)
    hub_id = None if Path(spec).expanduser().exists() else spec
    return BaseRef(weights_hash(folder), str(folder.resolve()), hub_id)


def _adapter_base(adapter: Adapter, folder: Path) -> Path:
    """The base folder of the adapter in `folder`: its recorded folder when it is still there,
    else its hub id (or PEFT's base_model_name_or_path) resolved as a MODEL argument; refused
    when its weights are not the ones the adapter recorded (SHA-256)."""
    base = adapter.base
    if base is not None and base.folder and Path(base.folder).is_dir():
        base_folder = Path(base.folder)
    else:
        name = (base.hub_id or base.folder) if base is not None else adapter.base_name
        if not name:
            raise UserError(
                f"The adapter in {folder} does not say which base model it applies to "
                f"(no {BASE_REF}, no base_model_name_or_path in {ADAPTER_CONFIG})."
            )
        try:
            base_folder = resolve_model(name)
        except UserError as e:
            raise UserError(
                f"The base model of the adapter in {folder} cannot be found: {e}"
            ) from None
    if base is not None and base.sha256:
        found = weights_hash(base_folder)
        if found != base.sha256:
            raise UserError(
                f"The adapter in {folder} was trained on base weights with SHA-256 "
                f"{base.sha256[:16]}..., but the base model at {base_folder} has "
                f"{found[:16]}...: its weights changed since. Put the original base back there, "
                "or train the adapter again on this one."
            )
    return base_folder


def _folder_tokenizer(folder: Path, config: GPT2Config) -> Tokenizer:
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        tokenizer = load_tokenizer(folder)
    elif config.vocab_size == gpt2_tokenizer().vocab_size:
        tokenizer = gpt2_tokenizer()  # a GPT-2-sized model saved without its tokenizer
    else:
        raise UserError(
            f"{folder} has no tokenizer (tokenizer.json or vocab.json + merges.txt), and its "
            f"vocabulary of {config.vocab_size} is not GPT-2's, so none can be assumed."
        )
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(
            f"The tokenizer in {folder} has {tokenizer.vocab_size} ids but the model only "
            f"{config.vocab_size}: they do not belong together."
        )
    return tokenizer


def hf_state_dict(model: GPT2) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face names and layouts (tied head omitted)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        tensor = tensor.detach()
        if name.endswith(_CONV1D):
            tensor = tensor.t()
        out[name] = tensor.contiguous().cpu()
    return out


def save_model(
    model: GPT2,
    tokenizer: Tokenizer,
    folder: str | Path,
    generation: dict | None = None,
) -> Path:
    """Write `model` and `tokenizer` as a Hugging Face-format folder and return its path.

    The folder loads with `transformers.AutoModelForCausalLM.from_pretrained` and in
    `transformers.pipeline("text-generation")`. `generation` adds defaults to
    `generation_config.json` (for example `{"max_new_tokens": 100}`). A model with LoRA
    adapters (`gpt2kit.model.lora`) is written as a PEFT adapter folder instead: only the
    adapters and a reference to its base (see `gpt2kit.formats.peft.save_adapter`).
    """
    if lora_spec(model) is not None:
        return save_adapter(model, folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    config_dict = config.to_hf_dict()
    config_dict["bos_token_id"] = config_dict["eos_token_id"] = tokenizer.eos_id
    (folder / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    save_file(hf_state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    chmod_like_new_file(folder / "model.safetensors")
    gen = {"bos_token_id": tokenizer.eos_id, "eos_token_id": tokenizer.eos_id, **(generation or {})}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tokenizer.save(folder, model_max_length=config.n_positions)
    return folder


def weights_hash(folder: str | Path) -> str:
    """SHA-256 of the folder's weight files, identifying exactly which weights were used."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model.bin"))
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()
