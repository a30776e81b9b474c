"""Back-of-the-envelope memory arithmetic for the chapters: weights, LoRA adapters, training, indexes.

Everything here is plain arithmetic on parameter counts, so it runs without torch and is exact
enough to plan hardware with. The assumptions, stated once:

* **Weights** take ``n_params * bits / 8`` bytes. 32-bit is float32, 16-bit is bfloat16/float16,
  4-bit is the NF4 data type of QLoRA. Real 4-bit models are larger: every block of 64 weights
  also stores a quantisation constant (see :func:`nf4_bits_per_param`), and only the linear
  layers of the decoder blocks are quantised; the embedding matrix, the output head and the norms
  keep the precision the model was loaded in (float32 on the cpu profile, where SmolLM2-135M's
  embeddings alone are a fifth of the parameters; see ``costs.memory_comparison``).
* **Training** memory (:func:`training_memory`) counts the weights, the gradients and the AdamW
  optimiser state, the way the ZeRO paper (Rajbhandari et al., 2020) counts "model states":
  mixed-precision full fine-tuning needs 2 bytes (16-bit weights) + 2 (16-bit gradients) + 4
  (float32 master copy) + 4 + 4 (Adam's two moments) = **16 bytes per trained parameter**.
  LoRA and QLoRA pay those 16 bytes only for the adapter parameters; the frozen base costs its
  weight bytes and nothing else.
* **Not counted**: activations (they grow with batch size x sequence length and are cut by
  gradient checkpointing), the CUDA context and allocator fragmentation (often 0.5-2 GB), and
  temporary buffers. Treat every training figure as a floor, not a promise.

``GB`` here means 10**9 bytes and ``GiB`` 2**30 bytes; the tables use GiB because that is what
``nvidia-smi`` and ``torch.cuda.max_memory_allocated`` report.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

from .errors import CourseError

GIB = 2**30
GB = 10**9

#: Nominal sizes of the models the course talks about (parameter counts, not file sizes).
MODEL_SIZES: dict[str, float] = {
    "135M (SmolLM2-135M, CPU profile)": 135e6,
    "1.5B (small GPU profile)": 1.5e9,
    "7B": 7e9,
}

#: Bytes per trained parameter for mixed-precision AdamW: 16-bit weight + 16-bit gradient +
#: float32 master weight + two float32 Adam moments (ZeRO paper's "2 + 2 + 12").
ADAM_MIXED_PRECISION_BYTES = 2 + 2 + 4 + 4 + 4

#: Shapes (d_in, d_out) of the attention projections of two well-known open architectures, used
#: to count LoRA parameters for a real model instead of guessing a share. Llama-2-7B uses full
#: multi-head attention (hidden 4096, 32 layers); Llama-2-70B uses grouped-query attention
#: (hidden 8192, 8 key/value heads of width 128, 80 layers).
ARCHITECTURES: dict[str, dict] = {
    "Llama-2-7B": {
        "n_params": 6.74e9,
        "n_layers": 32,
        "projections": {"q_proj": (4096, 4096), "k_proj": (4096, 4096),
                        "v_proj": (4096, 4096), "o_proj": (4096, 4096)},
    },
    "Llama-2-70B": {
        "n_params": 68.98e9,
        "n_layers": 80,
        "projections": {"q_proj": (8192, 8192), "k_proj": (8192, 1024),
                        "v_proj": (8192, 1024), "o_proj": (8192, 8192)},
    },
}


def _check_positive(name: str, value, *, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise CourseError(f"{name} must be a positive number, got {value!r}.")
    if value <= 0:
        raise CourseError(f"{name} must be positive, got {value!r}.")
    if integer and int(value) != value:
        raise CourseError(f"{name} must be a whole number, got {value!r}.")


# --------------------------------------------------------------------------- weights


def weight_bytes(n_params: float, bits: float) -> float:
    """Bytes needed to store ``n_params`` weights at ``bits`` bits each: ``n_params * bits / 8``.

    >>> weight_bytes(7e9, 4)
    3500000000.0
    """
    _check_positive("n_params", n_params)
    _check_positive("bits", bits)
    return float(n_params) * float(bits) / 8


def weight_gib(n_params: float, bits: float) -> float:
    """:func:`weight_bytes` in GiB (2**30 bytes)."""
    return weight_bytes(n_params, bits) / GIB


def nf4_bits_per_param(*, double_quant: bool = True, block_size: int = 64,
                       constant_block_size: int = 256) -> float:
    """Average storage per weight of QLoRA's NF4 format, quantisation constants included.

    Each block of ``block_size`` weights has one absmax constant. Stored as float32 that adds
    ``32 / 64 = 0.5`` bits per weight; double quantisation stores the constants in 8 bits with one
    float32 constant per ``constant_block_size`` of them: ``8/64 + 32/(64*256) = 0.127`` bits
    (the numbers of the QLoRA paper, Dettmers et al., 2023).
    """
    _check_positive("block_size", block_size, integer=True)
    _check_positive("constant_block_size", constant_block_size, integer=True)
    if double_quant:
        overhead = 8 / block_size + 32 / (block_size * constant_block_size)
    else:
        overhead = 32 / block_size
    return 4 + overhead


def memory_table(sizes: Mapping[str, float] | None = None,
                 bits: Sequence[float] = (32, 16, 4)):
    """Weight memory (GiB) for each model size at each precision, as a pandas DataFrame.

    One row per model, one column per precision (``"32-bit"``, ``"16-bit"``, ``"4-bit"``), plus
    ``"4-bit NF4 + constants"`` when 4 bits is asked for, which adds the double-quantised
    block constants of :func:`nf4_bits_per_param`.
    """
    import pandas as pd

    sizes = dict(MODEL_SIZES if sizes is None else sizes)
    if not sizes:
        raise CourseError("memory_table needs at least one model size.")
    rows = []
    for name, n_params in sizes.items():
        row = {"model": name, "parameters": float(n_params)}
        for b in bits:
            row[f"{b:g}-bit"] = weight_gib(n_params, b)
        if 4 in bits:
            row["4-bit NF4 + constants"] = weight_gib(n_params, nf4_bits_per_param())
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


# --------------------------------------------------------------------------- LoRA


def lora_params(d_in: int, d_out: int, rank: int) -> int:
    """Trainable parameters LoRA adds to one ``d_in x d_out`` linear layer: ``rank * (d_in + d_out)``.

    The frozen weight ``W`` (``d_out x d_in``, as PyTorch stores it) is left alone; LoRA learns
    ``B`` (``d_out x r``) and ``A`` (``r x d_in``) and uses ``W + (alpha / r) * B A`` (Hu et al.,
    2021; peft's ``lora_B`` and ``lora_A``).
    """
    for name, value in (("d_in", d_in), ("d_out", d_out), ("rank", rank)):
        _check_positive(name, value, integer=True)
    if rank > min(d_in, d_out):
        raise CourseError(
            f"rank {rank} is larger than the layer ({d_in}x{d_out}); a LoRA rank above "
            f"{min(d_in, d_out)} adds parameters without adding expressiveness.")
    return int(rank) * (int(d_in) + int(d_out))


def full_layer_params(d_in: int, d_out: int) -> int:
    """Parameters of the dense ``d_in x d_out`` weight that full fine-tuning would update."""
    _check_positive("d_in", d_in, integer=True)
    _check_positive("d_out", d_out, integer=True)
    return int(d_in) * int(d_out)


def lora_layer_summary(d_in: int, d_out: int, ranks: Sequence[int] = (4, 8, 16, 64)):
    """LoRA vs full parameters for one layer at several ranks (pandas DataFrame)."""
    import pandas as pd

    full = full_layer_params(d_in, d_out)
    rows = [{"rank": r, "LoRA parameters": lora_params(d_in, d_out, r),
             "full-layer parameters": full,
             "LoRA share": lora_params(d_in, d_out, r) / full} for r in ranks]
    return pd.DataFrame(rows).set_index("rank")


def lora_model_params(architecture: str, rank: int,
                      targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
    """LoRA parameters for a whole model of :data:`ARCHITECTURES`, adapters on ``targets`` in
    every layer."""
    arch = _architecture(architecture)
    unknown = [t for t in targets if t not in arch["projections"]]
    if unknown:
        raise CourseError(f"unknown target modules {unknown} for {architecture}; "
                          f"choose from {sorted(arch['projections'])}.")
    per_layer = sum(lora_params(*arch["projections"][t], rank) for t in targets)
    return per_layer * arch["n_layers"]


def _architecture(name: str) -> dict:
    if name not in ARCHITECTURES:
        raise CourseError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


# --------------------------------------------------------------------------- training

METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class TrainingMemory:
    """Model-state memory of one training set-up, in bytes (activations excluded)."""

    method: str
    n_params: float
    trainable_params: float
    frozen_weights: float
    trainable_states: float

    @property
    def total(self) -> float:
        return self.frozen_weights + self.trainable_states

    @property
    def total_gib(self) -> float:
        return self.total / GIB


def training_memory(n_params: float, method: str, *, trainable_params: float = 0.0,
                    base_bits: float | None = None) -> TrainingMemory:
    """Memory for weights + gradients + AdamW state when training a model of ``n_params``.

    * ``"full"``: every parameter is trained, 16 bytes each (mixed-precision AdamW).
    * ``"lora"``: the base stays frozen in 16 bits (``base_bits`` to change it); the
      ``trainable_params`` adapter parameters cost 16 bytes each.
    * ``"qlora"``: like LoRA, with the base in NF4 including its block constants
      (:func:`nf4_bits_per_param`, about 4.127 bits per weight).

    Activations, the CUDA context and fragmentation are **not** included (see the module notes).
    """
    _check_positive("n_params", n_params)
    if method not in METHODS:
        raise CourseError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "full":
        if trainable_params not in (0, 0.0, n_params):
            raise CourseError("full fine-tuning trains every parameter; leave trainable_params out.")
        return TrainingMemory(method, float(n_params), float(n_params), 0.0,
                              float(n_params) * ADAM_MIXED_PRECISION_BYTES)
    _check_positive("trainable_params", trainable_params)
    if trainable_params >= n_params:
        raise CourseError("an adapter has far fewer parameters than its base model; "
                          f"got trainable_params={trainable_params:g} >= n_params={n_params:g}.")
    if base_bits is None:
        base_bits = 16 if method == "lora" else nf4_bits_per_param()
    return TrainingMemory(method, float(n_params), float(trainable_params),
                          weight_bytes(n_params, base_bits),
                          float(trainable_params) * ADAM_MIXED_PRECISION_BYTES)


def gpus_needed(total_bytes: float, gpu_gib: float = 80.0) -> int:
    """Smallest number of GPUs of ``gpu_gib`` whose memory adds up to ``total_bytes``.

    This assumes the state can be sharded evenly (FSDP / ZeRO-3) and ignores activations, so it
    is a lower bound."""
    _check_positive("total_bytes", total_bytes)
    _check_positive("gpu_gib", gpu_gib)
    return max(1, math.ceil(total_bytes / (gpu_gib * GIB)))


def training_table(architectures: Sequence[str] = ("Llama-2-7B", "Llama-2-70B"), *,
                   rank: int = 16, gpu_gib: float = 80.0):
    """Training memory (GiB) of full fine-tuning, LoRA and QLoRA for each architecture.

    LoRA/QLoRA put rank-``rank`` adapters on the four attention projections of every layer.
    Columns: method, trainable parameters, frozen-weight GiB, trained-state GiB, total GiB and
    the minimum number of ``gpu_gib`` GPUs (activations excluded, so real runs need more).
    """
    import pandas as pd

    rows = []
    for name in architectures:
        arch = _architecture(name)
        adapter = lora_model_params(name, rank)
        for method in METHODS:
            mem = (training_memory(arch["n_params"], "full") if method == "full"
                   else training_memory(arch["n_params"], method, trainable_params=adapter))
            rows.append({
                "model": name,
                "method": {"full": "full fine-tuning", "lora": f"LoRA r={rank} (16-bit base)",
                           "qlora": f"QLoRA r={rank} (NF4 base)"}[method],
                "trained parameters": mem.trainable_params,
                "frozen weights (GiB)": mem.frozen_weights / GIB,
                "weights+grads+Adam of trained part (GiB)": mem.trainable_states / GIB,
                "total without activations (GiB)": mem.total_gib,
                f"min. {gpu_gib:g} GiB GPUs": gpus_needed(mem.total, gpu_gib),
            })
    return pd.DataFrame(rows).set_index(["model", "method"])


# --------------------------------------------------------------------------- retrieval index


def embedding_index_bytes(n_vectors: int, dim: int, bits: float = 32) -> float:
    """Raw size of a flat vector index: ``n_vectors * dim * bits / 8`` (no graph, no payload).

    all-MiniLM-L6-v2 gives 384-dimensional float32 vectors, so a million chunks take
    ``1e6 * 384 * 4`` = 1.536e9 bytes before an HNSW graph or metadata is added.
    """
    _check_positive("n_vectors", n_vectors, integer=True)
    _check_positive("dim", dim, integer=True)
    _check_positive("bits", bits)
    return float(n_vectors) * float(dim) * float(bits) / 8
