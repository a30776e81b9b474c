"""Memory arithmetic quoted by the definitions and costs chapters: exact, not approximate."""
import math

import pytest

from ftrag import memory
from ftrag.errors import CourseError


def test_weight_bytes_exact():
    assert memory.weight_bytes(7e9, 4) == 3.5e9
    assert memory.weight_bytes(7e9, 16) == 14e9
    assert memory.weight_bytes(7e9, 32) == 28e9
    assert memory.weight_bytes(135e6, 16) == 270e6
    assert memory.weight_bytes(1, 8) == 1.0


def test_weight_gib_uses_binary_gigabytes():
    assert memory.weight_gib(2**30, 8) == 1.0
    assert memory.weight_gib(7e9, 4) == pytest.approx(3.259629011154175)


def test_nf4_block_constants_match_the_qlora_paper():
    assert memory.nf4_bits_per_param(double_quant=False) == 4.5
    assert memory.nf4_bits_per_param() == 4 + 8 / 64 + 32 / (64 * 256)
    saving = memory.nf4_bits_per_param(double_quant=False) - memory.nf4_bits_per_param()
    assert saving == pytest.approx(0.373, abs=1e-3)


def test_memory_table_shape_and_values():
    table = memory.memory_table()
    assert list(table.columns) == ["parameters", "32-bit", "16-bit", "4-bit",
                                   "4-bit NF4 + constants"]
    assert len(table) == 3
    row7 = table.loc["7B"]
    assert row7["16-bit"] == 14e9 / 2**30
    assert row7["4-bit"] == 3.5e9 / 2**30
    assert row7["32-bit"] == 2 * row7["16-bit"] == 8 * row7["4-bit"]
    assert row7["4-bit NF4 + constants"] > row7["4-bit"]


def test_lora_params_one_layer():
    assert memory.lora_params(4096, 4096, 8) == 65_536
    assert memory.full_layer_params(4096, 4096) == 16_777_216
    assert memory.lora_params(576, 576, 8) == 9_216
    assert memory.lora_params(8192, 1024, 16) == 16 * 9216


def test_lora_layer_summary_share():
    table = memory.lora_layer_summary(4096, 4096, ranks=(8,))
    assert table.loc[8, "LoRA share"] == 65_536 / 16_777_216 == 1 / 256


def test_lora_model_params_counts_every_layer():
    assert memory.lora_model_params("Llama-2-7B", 16) == 32 * 4 * 16 * (4096 + 4096)
    expected_70b = 80 * 16 * (2 * (8192 + 8192) + 2 * (8192 + 1024))
    assert memory.lora_model_params("Llama-2-70B", 16) == expected_70b
    assert memory.lora_model_params("Llama-2-7B", 8, targets=("q_proj",)) == 32 * 8 * 8192


def test_training_memory_full_is_16_bytes_per_parameter():
    mem = memory.training_memory(7e9, "full")
    assert mem.total == 112e9
    assert mem.frozen_weights == 0
    assert memory.ADAM_MIXED_PRECISION_BYTES == 16


def test_training_memory_lora_and_qlora():
    lora = memory.training_memory(7e9, "lora", trainable_params=20e6)
    assert lora.frozen_weights == 14e9
    assert lora.trainable_states == 320e6
    assert lora.total == 14.32e9
    qlora = memory.training_memory(7e9, "qlora", trainable_params=20e6)
    assert qlora.frozen_weights == 7e9 * memory.nf4_bits_per_param() / 8
    assert qlora.total < lora.total < memory.training_memory(7e9, "full").total
    plain4 = memory.training_memory(7e9, "qlora", trainable_params=20e6, base_bits=4)
    assert plain4.frozen_weights == 3.5e9


def test_gpus_needed_is_a_ceiling():
    assert memory.gpus_needed(80 * 2**30) == 1
    assert memory.gpus_needed(80 * 2**30 + 1) == 2
    assert memory.gpus_needed(112e9) == 2
    assert memory.gpus_needed(1) == 1


def test_training_table_orders_methods():
    table = memory.training_table()
    for model in ("Llama-2-7B", "Llama-2-70B"):
        totals = table.loc[model]["total without activations (GiB)"].tolist()
        assert totals[0] > totals[1] > totals[2]  # full > LoRA > QLoRA
    full70 = table.loc[("Llama-2-70B", "full fine-tuning")]
    assert full70["total without activations (GiB)"] == 68.98e9 * 16 / 2**30


def test_embedding_index_bytes():
    assert memory.embedding_index_bytes(1_000_000, 384) == 1.536e9
    assert memory.embedding_index_bytes(10, 384, bits=8) == 3840


@pytest.mark.parametrize("call", [
    lambda: memory.weight_bytes(0, 4),
    lambda: memory.weight_bytes(-1, 4),
    lambda: memory.weight_bytes(7e9, 0),
    lambda: memory.weight_bytes("7B", 4),
    lambda: memory.weight_bytes(True, 4),
    lambda: memory.weight_bytes(math.nan, 4),
    lambda: memory.lora_params(4096, 4096, 0),
    lambda: memory.lora_params(4096, 4096, 8.5),
    lambda: memory.lora_params(16, 16, 32),
    lambda: memory.lora_model_params("GPT-9", 8),
    lambda: memory.lora_model_params("Llama-2-7B", 8, targets=("up_proj",)),
    lambda: memory.training_memory(7e9, "adapter"),
    lambda: memory.training_memory(7e9, "lora"),
    lambda: memory.training_memory(7e9, "lora", trainable_params=8e9),
    lambda: memory.training_memory(7e9, "full", trainable_params=5),
    lambda: memory.memory_table({}),
    lambda: memory.embedding_index_bytes(10, 0),
])
def test_bad_input_raises_course_error(call):
    with pytest.raises(CourseError):
        call()
