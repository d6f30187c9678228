"""Which model to calibrate: the built-ins by name, or a user's ``module:factory``.

A factory returns ``(model, make_input)`` where ``make_input(batch_size)`` returns the model's
input for that many requests (a tensor or a tuple of tensors, batch first). Calibration calls
``make_input(1)`` once per request and concatenates, as a server assembles a batch.

``module:factory`` imports that module and runs its code in this process: code execution by design.
Whatever the user's code raises (at import, in the factory, in ``make_input`` or the forward pass)
becomes one :class:`CalibrationError` line with the code's own message (:func:`described`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from calibration import nets
from calibration.errors import CalibrationError
from sim.errors import shown
from sim.models.archs import BUILTIN_ARCHS, MlpArch, ResNetArch, TransformerArch, builtin_arch

MakeInput = Callable[[int], "torch.Tensor | tuple[torch.Tensor, ...]"]


@dataclass(frozen=True)
class BuiltModel:
    name: str
    model: nn.Module
    make_input: MakeInput
    seq_len: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    default_batch_sizes: tuple[int, ...]
    for_tests: bool = False


BUILTIN_MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec("mlp", "tabular fraud-scoring MLP, 256 features -> 1024-1024-512 -> score",
                  (1, 2, 4, 8, 16, 32, 64, 128, 256)),
        ModelSpec("resnet50", "ResNet-50 v1.5, 3x224x224 images -> 1000 classes", (1, 2, 4, 8, 16)),
        ModelSpec("bert-base", "BERT-base encoder + classifier, --seq-len tokens (default 128)", (1, 2, 4, 8)),
        ModelSpec("decoder", "6-layer GPT-style decoder (d=512), prompt of --seq-len tokens -> next-token "
                  "logits", (1, 2, 4, 8, 16)),
        ModelSpec("mlp-2048", "MLP 256 -> 2048-2048-2048 -> 1, no sigmoid (the MLP measured on an H100)",
                  (1, 2, 4, 8, 16, 32, 64, 128, 256)),
        ModelSpec("bert-encoder", "torch nn.TransformerEncoder (12x768, ReLU, post-norm) over word embeddings, "
                  "classifier on token 0, --seq-len tokens (the encoder measured on an H100)", (1, 2, 4, 8)),
        ModelSpec("test-tiny", "16 -> 32 -> 4 MLP for tests (microseconds per batch)", (1, 2, 4, 8), True),
        ModelSpec("test-stall", "test-tiny that sleeps 30 ms the first time it sees each batch size",
                  (1, 2, 4, 8), True),
    )
}
USER_DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def default_batch_sizes(name: str) -> tuple[int, ...]:
    spec = BUILTIN_MODELS.get(name)
    return spec.default_batch_sizes if spec else USER_DEFAULT_BATCH_SIZES


def check_model_name(name: str) -> None:
    """Fail early, before torch work, on a name that is neither built in nor ``module:factory``."""
    module, _, factory = name.partition(":")
    if name in BUILTIN_MODELS or (all(p.isidentifier() for p in module.split(".")) and factory.isidentifier()):
        return
    raise CalibrationError(f"--model = {shown(name)}: unknown model; built-ins are {', '.join(BUILTIN_MODELS)}, "
                           "or give module:factory (a dotted module name and a function in it) for your own")


def described(exc: BaseException) -> str:
    """How the user's code failed, in one short line: ``ValueError: bad width``."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: torch's OutOfMemoryError, Python's MemoryError or torch's CPU allocator."""
    text = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(
        words in text for words in ("out of memory", "not enough memory", "can't allocate memory"))


def build_model(name: str, seq_len: int | None = None, seed: int = 0) -> BuiltModel:
    """The model and its per-request input maker, weights initialised from ``seed``."""
    check_model_name(name)
    torch.manual_seed(seed)
    inputs = torch.Generator().manual_seed(seed + 1)
    if name not in BUILTIN_MODELS:
        if seq_len is not None:
            raise CalibrationError(f"--seq-len = {seq_len}: only the built-in transformers take it")
        model, make_input = _load_factory(name)
        return BuiltModel(name, model, make_input)
    if name.startswith("test-"):
        model = nets.StallOnNewShape() if name == "test-stall" else nets.Tiny()
        return BuiltModel(name, model, lambda b: torch.randn(b, 16, generator=inputs))
    if seq_len is not None and name not in ("bert-base", "bert-encoder", "decoder"):
        raise CalibrationError(f"--seq-len = {seq_len}: {name} has no sequence length (bert-base, bert-encoder, "
                               "decoder do)")
    limit = getattr(BUILTIN_ARCHS[name], "max_positions", None)
    if seq_len is not None and limit is not None and not 1 <= seq_len <= limit:
        raise CalibrationError(f"--seq-len = {seq_len}: 1..{limit} for {name}")
    arch = builtin_arch(name, seq_len)
    if isinstance(arch, MlpArch):
        return BuiltModel(name, nets.FraudMLP(arch), lambda b: torch.randn(b, arch.in_features, generator=inputs))
    if isinstance(arch, ResNetArch):
        size = arch.image_size
        return BuiltModel(name, nets.ResNet(arch), lambda b: torch.randn(b, 3, size, size, generator=inputs))
    assert isinstance(arch, TransformerArch)
    model = (nets.Decoder(arch) if arch.causal else nets.BertClassifier(arch) if arch.bert_embeddings
             else nets.TorchEncoderClassifier(arch))
    return BuiltModel(name, model, lambda b: torch.randint(0, arch.vocab_size, (b, arch.seq_len),
                                                           generator=inputs), arch.seq_len)


def _load_factory(ref: str) -> tuple[nn.Module, MakeInput]:
    """Import the module and call the factory (the user's code: anything it raises is one line)."""
    module_name, attr = ref.split(":", 1)
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # `capsim` is a console script: let it find modules in the cwd
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):  # the module (or its package) itself
            raise CalibrationError(f"--model = {ref!r}: cannot import module {exc.name!r}") from None
        raise CalibrationError(f"--model = {ref!r}: importing {module_name!r} raised {described(exc)}") from None
    except (Exception, SystemExit) as exc:  # a SyntaxError, or whatever its top-level code raises
        raise CalibrationError(f"--model = {ref!r}: importing {module_name!r} raised {described(exc)}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise CalibrationError(f"--model = {ref!r}: module {module_name!r} has no {attr!r}")
    if not callable(factory):
        raise CalibrationError(f"--model = {ref!r}: {attr} is {shown(factory)}, not a function returning "
                               "(torch.nn.Module, make_input(batch_size))")
    try:
        result = factory()
    except (Exception, SystemExit) as exc:
        raise CalibrationError(f"--model = {ref!r}: the factory raised {described(exc)}") from None
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)
            and callable(result[1])):
        raise CalibrationError(f"--model = {ref!r}: the factory must return (torch.nn.Module, "
                               f"make_input(batch_size)), got {type(result).__name__} {shown(result)}")
    return result
