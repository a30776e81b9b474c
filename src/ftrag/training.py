"""QLoRA training: the library objects a run is built from, the run itself, and the adapter cache.

The recipe (Dettmers et al., 2023): load the base in 4-bit NF4 with double quantisation
(``BitsAndBytesConfig``), freeze it (``prepare_model_for_kbit_training``), add LoRA adapters
(``LoraConfig``, ``get_peft_model``) to the linear layers of the decoder blocks
(:mod:`ftrag.lora_targets`) and train only those with transformers' ``Trainer``. The builders here
(:func:`lora_config`, :func:`qlora_model`, :func:`training_arguments`, :func:`course_trainer`) make
those objects from a profile's :class:`~ftrag.profiles.TrainingSettings`; the QLoRA lab writes the
same calls out in its cells. The course's Trainer subclass and collator are CPU speed-ups
(:mod:`ftrag.cpu_speedups`).

Adapters are cached under ``<cache>/adapters/<name>-<hash>``; the hash covers the training data,
the training settings and the base model, so changing any of them trains a new adapter and a
re-run of a lab (or the book build after ``make test``) reuses the stored one.
:func:`train_or_load` runs a Trainer built by hand through the same cache: built as the profile says,
it finds the adapter :func:`ensure_adapter` would; built otherwise, its differences join the hash.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .adapters import ADAPTER_CONFIG, ADAPTER_FILE
from .costs import peak_memory_mb
from .encoding import IGNORE_INDEX, encode_examples, messages_of
from .errors import CourseError
from .evaluate import evenly_spaced
from .lora_targets import adapted_blocks, lora_target_modules
from .paths import cache_dir

#: Bump when the way examples are encoded or trained changes: it is part of the adapter cache key.
FORMAT_VERSION = 1
METRICS_FILE = "training.json"
#: The validation loss is computed on at most this many validation examples, evenly spaced through
#: the file (every ``eval_every`` steps a forward pass over all 85 would cost more than training).
#: On 2 cores each evaluation of 16 took about 7 s, four of them a fifth of the behaviour run; 8
#: halve that, and the loss still falls from about 2.5 to 0.4, far beyond its noise.
VAL_LOSS_EXAMPLES = 8


@dataclass
class TrainResult:
    """What a training run produced and measured (also stored as ``training.json`` in the adapter).

    ``seconds`` is the wall time of the whole run, periodic validation included;
    ``seconds_per_step`` the mean wall time of one optimizer step (forward, backward, update).
    ``peak_memory_mb`` is the process's peak resident memory on CPU (everything the process held
    before training counts too), the peak memory PyTorch allocated on a GPU.
    """

    adapter_dir: str
    train_losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    seconds: float
    seconds_per_step: float
    steps: int
    peak_memory_mb: float
    trainable_params: int
    total_params: int
    settings: dict[str, Any]
    cached: bool = False
    examples: int = 0
    device: str = "cpu"

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else float("nan")

    def coverage(self) -> str:
        """What the optimizer steps read, in words: ``"24 steps of 4 chats: 96 of the 358 training
        chats, once each"``, or the number of passes when the steps read the data more than once."""
        batch = int(self.settings.get("batch_size") or 0)
        if batch <= 0 or self.examples <= 0:
            return f"{self.steps} steps"
        read = self.steps * batch
        head = f"{self.steps} steps of {batch} chats"
        if read <= self.examples:
            return f"{head}: {read} of the {self.examples} training chats, once each"
        return f"{head}: {read / self.examples:.1f} passes over the {self.examples} training chats"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, adapter_dir: str, cached: bool) -> "TrainResult":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["train_losses"] = [tuple(x) for x in fields.get("train_losses", [])]
        fields["val_losses"] = [tuple(x) for x in fields.get("val_losses", [])]
        fields.update(adapter_dir=str(adapter_dir), cached=cached)
        return cls(**fields)


def settings_record(profile) -> dict[str, Any]:
    """The profile's training settings as they enter the adapter cache key and ``training.json``."""
    # model_description, stored under "model_id": the base's id and where its weights come from (as
    # the cpu profile's model_id spelled it before weights_source existed: adapter keys stay the same)
    return {**asdict(profile.training), "model_id": profile.model_description, "device": profile.device,
            "val_loss_examples": VAL_LOSS_EXAMPLES}


def check_bitsandbytes(profile=None) -> None:
    """Raise :class:`CourseError` with the fix when bitsandbytes cannot quantise on this machine."""
    try:
        import bitsandbytes.functional as F
        import torch

        device = "cuda" if profile is not None and profile.is_gpu else "cpu"
        weight = torch.randn(64, 64, device=device)
        q, state = F.quantize_4bit(weight, quant_type="nf4")
        F.dequantize_4bit(q, state)
    except CourseError:
        raise
    except Exception as exc:  # noqa: BLE001 - turned into one readable line
        raise CourseError(
            f"bitsandbytes cannot run 4-bit NF4 here ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). "
            "Reinstall the pinned environment (`make test`, or `pip install bitsandbytes==0.50.2`; "
            "version 0.45 or newer runs NF4 on CPU), or use the gpu profile on a CUDA machine."
        ) from exc


def release_freed_memory() -> bool:
    """Hand memory that the C allocator keeps after ``free`` back to the OS (``malloc_trim``).

    A CPU training step allocates and frees about a gigabyte of activations; glibc keeps the freed
    blocks, so the process's resident memory stays near its peak after training. Only Linux/glibc;
    returns whether it ran. (Forcing every large block through ``mmap`` with ``mallopt`` instead
    keeps the peak lower, but made each step 1.7x slower and slowed generation afterwards.)
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _progress_callback(total: int, enabled: bool):
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One tqdm bar with the latest training and validation loss (instead of Trainer's printing)."""

        def __init__(self):
            self.bar = None
            self.postfix: dict[str, str] = {}
            self.step_seconds: list[float] = []  # optimizer steps only, without the evaluations
            self._t0 = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=total, desc="training", disable=not enabled)

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self._t0)
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, label in (("loss", "loss"), ("eval_loss", "val")):
                if logs and key in logs:
                    self.postfix[label] = f"{logs[key]:.3f}"
            if self.bar is not None and self.postfix:
                self.bar.set_postfix(self.postfix, refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return Progress()


# --------------------------------------------------------------------------- the objects of a run


def lora_config(profile, model):
    """The ``peft.LoraConfig`` of the profile's settings, on :func:`~ftrag.lora_targets.lora_target_modules`
    of ``model`` (in the blocks :func:`~ftrag.lora_targets.adapted_blocks` picks)."""
    from peft import LoraConfig

    s = profile.training
    return LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                      task_type="CAUSAL_LM", target_modules=lora_target_modules(model),
                      layers_to_transform=adapted_blocks(model, s.adapted_blocks))


def qlora_model(profile, model=None):
    """The model a training run updates: the profile's base in 4-bit NF4 (or ``model``, already in
    NF4: ``benchmarks/gpu_check.py`` passes a random one), prepared for k-bit training, with fresh
    LoRA adapters (:func:`lora_config`)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from . import profiles
    from .cpu_speedups import keep_nf4_trainable
    from .harmless_messages import peft_old_name_warnings_dropped

    s = profile.training
    model = profiles.load_model(profile, quantized=True) if model is None else model
    keep_nf4_trainable(model)
    with peft_old_name_warnings_dropped():  # peft uses transformers' old checkpointing names
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
        return get_peft_model(model, lora_config(profile, model))


def training_arguments(profile, output_dir: str | os.PathLike, *, validate: bool = True):
    """The ``transformers.TrainingArguments`` of the profile's settings (CPU: ``use_cpu``; GPU:
    bf16/fp16 autocast as the profile's compute dtype); ``output_dir`` is scratch space.
    ``validate=False``: no validation loss (a run without validation chats)."""
    import torch
    from transformers import TrainingArguments

    from . import profiles
    from .cpu_speedups import micro_batch_size

    s = profile.training
    dtype = profiles.compute_dtype(profile)
    micro = micro_batch_size(s)
    return TrainingArguments(
        output_dir=str(output_dir),
        use_cpu=not profile.is_gpu,
        bf16=dtype == torch.bfloat16,  # float32 on the cpu profile; bf16 autocast also runs on a CPU
        fp16=profile.is_gpu and dtype == torch.float16,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=s.batch_size // micro,
        per_device_eval_batch_size=micro,
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        eval_strategy="steps" if validate else "no",
        eval_steps=s.eval_every,
        save_strategy="no",
        report_to="none",
        seed=s.seed,
        data_seed=s.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        prediction_loss_only=True,  # never gather eval logits (batch x length x vocabulary floats)
        train_sampling_strategy="group_by_length",  # batches of similar length pad less
    )


def encoded_splits(tokenizer, profile, train: Sequence[Any], val: Sequence[Any] | None):
    """``(training rows, validation rows)`` as a run reads them (:func:`ftrag.encoding.encode_examples`):
    the first ``train_examples`` training chats (all when None) and :data:`VAL_LOSS_EXAMPLES`
    validation chats evenly spaced through ``val``."""
    s = profile.training
    train = list(train)[: s.train_examples] if s.train_examples else list(train)
    if not train:
        raise CourseError("A training run got no training examples.")
    val = evenly_spaced(list(val or []), VAL_LOSS_EXAMPLES)
    return encode_examples(tokenizer, train, s.max_seq_len), encode_examples(tokenizer, val, s.max_seq_len)


def data_collator(profile, tokenizer):
    """The profile's collator: :func:`~ftrag.cpu_speedups.pack_shared_prefix` (``share_prompt_prefix``)
    or transformers' padding collator with the prompt's ``-100`` labels."""
    from transformers import DataCollatorForSeq2Seq

    from .cpu_speedups import pack_shared_prefix

    if profile.training.share_prompt_prefix:
        return pack_shared_prefix
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def course_trainer(profile, model, args, train_set, val_set, tokenizer):
    """The course's Trainer (:data:`~ftrag.cpu_speedups.ReplyLossTrainer`) over encoded rows."""
    from .cpu_speedups import ReplyLossTrainer

    return ReplyLossTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set or None,
                            data_collator=data_collator(profile, tokenizer))


# --------------------------------------------------------------------------- running


def run_training(trainer, profile, output_dir: str | os.PathLike, *, progress: bool = True) -> TrainResult:
    """Train with ``trainer`` (validation loss before the first step, every ``eval_steps`` and at
    the end), save the adapter plus ``training.json`` with the measured figures into ``output_dir``
    (complete or not at all), and free the model's memory."""
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .cpu_speedups import keep_nf4_trainable

    check_bitsandbytes(profile)
    keep_nf4_trainable(trainer.model)  # a no-op when the set-up already did it
    if profile.is_gpu:
        torch.cuda.reset_peak_memory_stats()  # the peak from here on: the model as loaded, plus training
    output_dir = Path(output_dir)
    progress_bar = _progress_callback(trainer.args.max_steps, progress)
    trainer.add_callback(progress_bar)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    model = trainer.model
    trainable, total = model.get_nb_trainable_parameters()  # counts packed 4-bit weights correctly

    val_losses: list[tuple[int, float]] = []
    if trainer.eval_dataset:
        val_losses.append((0, float(trainer.evaluate()["eval_loss"])))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    history = trainer.state.log_history
    train_losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    val_losses += [(int(h["step"]), float(h["eval_loss"])) for h in history if "eval_loss" in h]
    if trainer.eval_dataset and val_losses[-1][0] != trainer.state.global_step:
        val_losses.append((trainer.state.global_step, float(trainer.evaluate()["eval_loss"])))
    steps = int(trainer.state.global_step)

    tmp = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    settings = settings_record(profile)
    changes = getattr(trainer, "_course_setup_changes", None)
    if changes:
        settings["setup_changes"] = changes
    result = TrainResult(
        adapter_dir=str(output_dir), train_losses=train_losses, val_losses=val_losses,
        seconds=round(seconds, 2), steps=steps,
        seconds_per_step=round(sum(progress_bar.step_seconds) / max(len(progress_bar.step_seconds), 1), 3),
        peak_memory_mb=round(peak_memory_mb(profile.device), 1), trainable_params=int(trainable),
        total_params=int(total), settings=settings, examples=len(trainer.train_dataset),
        device=profile.device,
    )
    (tmp / METRICS_FILE).write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp.rename(output_dir)  # appears complete or not at all
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    trainer.model = trainer.model_wrapped = None  # the caller's names for them may still hold them
    del trainer, model
    gc.collect()
    if profile.is_gpu:
        torch.cuda.empty_cache()
    else:
        release_freed_memory()
    return result


def train_adapter(profile, train: Sequence[Any], val: Sequence[Any] | None, *, output_dir: str | os.PathLike,
                  progress: bool = True) -> TrainResult:
    """Train a QLoRA adapter with the profile's :class:`~ftrag.profiles.TrainingSettings`: every
    object built by this module's builders, then :func:`run_training` into ``output_dir``."""
    from transformers import set_seed

    from . import profiles

    check_bitsandbytes(profile)
    tok = profiles.load_tokenizer(profile)
    train_set, val_set = encoded_splits(tok, profile, train, val)
    output_dir = Path(output_dir)
    set_seed(profile.training.seed)
    gc.collect()
    if not profile.is_gpu:
        release_freed_memory()  # models the caller deleted: give their memory back before training
    model = qlora_model(profile)
    args = training_arguments(profile, output_dir.with_name(output_dir.name + ".trainer"), validate=bool(val_set))
    trainer = course_trainer(profile, model, args, train_set, val_set, tok)
    del model
    return run_training(trainer, profile, output_dir, progress=progress)


# --------------------------------------------------------------------------- cached adapters


def adapter_key(profile, train: Sequence[Any], val: Sequence[Any] | None,
                setup_changes: Mapping[str, Any] | None = None) -> str:
    """Hash of everything that determines the adapter: data, settings, base model, code version
    (and, for a Trainer built otherwise than the profile says, its :func:`setup_changes`)."""
    record = {
        "format": FORMAT_VERSION,
        "train": [messages_of(ex) for ex in train],
        "val": [messages_of(ex) for ex in (val or [])],
        "settings": settings_record(profile),
    }
    if setup_changes:
        record["setup_changes"] = dict(setup_changes)
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def adapter_dir_for(profile, name: str, train: Sequence[Any], val: Sequence[Any] | None,
                    setup_changes: Mapping[str, Any] | None = None) -> Path:
    return cache_dir() / "adapters" / f"{name}-{adapter_key(profile, train, val, setup_changes)}"


def is_complete(adapter_dir: str | os.PathLike) -> bool:
    folder = Path(adapter_dir)
    return all((folder / f).is_file() for f in (ADAPTER_FILE, ADAPTER_CONFIG, METRICS_FILE))


def load_result(adapter_dir: str | os.PathLike) -> TrainResult:
    data = json.loads((Path(adapter_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    return TrainResult.from_json(data, adapter_dir=str(adapter_dir), cached=True)


def _cached(folder: Path) -> TrainResult | None:
    if is_complete(folder):
        try:
            return load_result(folder)
        except (ValueError, TypeError, KeyError):
            pass  # unreadable metrics: train again
    folder.parent.mkdir(parents=True, exist_ok=True)
    return None


def describe_setup(trainer) -> dict[str, Any]:
    """What a Trainer would train with, as plain data: the LoRA config, the 4-bit quantisation, the
    training arguments (without their scratch folder), the Trainer class, the collator and a hash
    of the encoded rows."""
    model = trainer.model
    lora = model.peft_config["default"]
    quant = getattr(model.config, "quantization_config", None)
    quant = quant.to_dict() if hasattr(quant, "to_dict") else dict(quant or {})
    args = {k: v for k, v in trainer.args.to_dict().items() if k not in ("output_dir", "logging_dir")}
    collator = trainer.data_collator
    rows = json.dumps([list(trainer.train_dataset), list(trainer.eval_dataset or [])], sort_keys=True)
    return json.loads(json.dumps({
        "lora": {k: sorted(v) if isinstance(v, (set, list)) and k == "target_modules" else v
                 for k, v in lora.to_dict().items() if k in _LORA_FIELDS},
        "quantization": {k: quant.get(k) for k in _QUANT_FIELDS},
        "arguments": args,
        "trainer": type(trainer).__name__,
        "collator": getattr(collator, "__name__", type(collator).__name__),
        "rows": hashlib.sha256(rows.encode()).hexdigest(),
    }, sort_keys=True, default=str))


_LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "layers_to_transform", "bias", "task_type",
                "use_rslora", "use_dora", "init_lora_weights", "modules_to_save", "fan_in_fan_out")
_QUANT_FIELDS = ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype",
                 "bnb_4bit_quant_storage")


def setup_changes(trainer, profile, train: Sequence[Any], val: Sequence[Any] | None) -> dict[str, Any]:
    """The parts of :func:`describe_setup` in which ``trainer`` differs from the run the profile
    describes (:func:`train_adapter`'s objects, for the same data); ``{}`` when it is that run."""
    from types import SimpleNamespace

    from . import profiles

    tok = profiles.load_tokenizer(profile)
    train_set, val_set = encoded_splits(tok, profile, train, val)
    args = training_arguments(profile, trainer.args.output_dir, validate=bool(val_set))
    model = SimpleNamespace(peft_config={"default": lora_config(profile, trainer.model)},
                            config=SimpleNamespace(quantization_config=profiles.bnb_config(profile)))
    expected = describe_setup(SimpleNamespace(model=model, args=args, data_collator=data_collator(profile, tok),
                                              train_dataset=train_set, eval_dataset=val_set))
    expected["trainer"] = "ReplyLossTrainer"
    # Building TrainingArguments resets accelerate's process-wide state (transformers calls
    # AcceleratorState._reset_state), which leaves the reader's Trainer unable to evaluate or train:
    # give it a fresh Accelerator, as its own __init__ would.
    if hasattr(trainer, "create_accelerator_and_postprocess"):
        trainer.create_accelerator_and_postprocess()
    actual = describe_setup(trainer)
    return {part: value for part, value in actual.items() if value != expected[part]}


def train_or_load(trainer, profile, name: str, train: Sequence[Any], val: Sequence[Any] | None = None, *,
                  progress: bool = True) -> TrainResult:
    """Run a Trainer built by hand through the adapter cache: the stored adapter when there is one,
    else :func:`run_training`. ``train``/``val`` are the examples its rows were encoded from.

    A Trainer built as the profile says (same LoRA config, quantisation, arguments, Trainer class,
    collator and rows as :func:`train_adapter` would build) has the key :func:`ensure_adapter`
    uses, so both find the same adapter; any difference (:func:`setup_changes`) joins the key."""
    train, val = list(train), list(val or [])
    changes = setup_changes(trainer, profile, train, val)
    folder = adapter_dir_for(profile, name, train, val, changes)
    cached = _cached(folder)
    if cached is not None:
        trainer.model = trainer.model_wrapped = None
        gc.collect()
        return cached
    trainer._course_setup_changes = changes
    return run_training(trainer, profile, folder, progress=progress)


def ensure_adapter(profile, name: str, train: Sequence[Any], val: Sequence[Any] | None = None, *,
                   progress: bool = True) -> TrainResult:
    """The adapter ``name`` for this data and these settings: trained once, then read from the cache.

    ``ensure_adapter(profile, "behaviour", load_finetune("train"), load_finetune("val"))`` is the
    course's behaviour adapter (JSON format + Lumio voice), shared by the QLoRA and hybrid labs.
    A returned result with ``cached=True`` carries the figures measured when it was trained.
    """
    train, val = list(train), list(val or [])
    folder = adapter_dir_for(profile, name, train, val)
    cached = _cached(folder)
    return cached if cached is not None else train_adapter(profile, train, val, output_dir=folder, progress=progress)


def behaviour_adapter(profile, *, progress: bool = True) -> TrainResult:
    """The canonical behaviour adapter: trained on ``data/finetune`` train, validated on its val split."""
    from .data import load_finetune

    return ensure_adapter(profile, "behaviour", load_finetune("train"), load_finetune("val"), progress=progress)
