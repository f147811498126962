"""The GPU speed techniques are exact: packed batches give the loss (and gradients) of
padded ones, the chunked cross-entropy equals the plain one, and a packed training run
follows the padded run's loss curve. Tiny random-init GPT-2 and Qwen2 models on CPU."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from retrain.loss import causal_lm_loss, chunked_cross_entropy
from retrain.packing import collate_packed, collate_padded, pack_rows
from retrain.spec import RetrainSpec
from retrain.trainer import Encoded, fit, prepare_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))  # exact comparisons


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True))


def _examples(n, seed=0, vocab=300):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length, prompt = rng.randint(4, 30), rng.randint(1, 3)
        ids = [rng.randrange(1, vocab) for _ in range(length)]
        out.append(Encoded({}, ids, [-100] * prompt + ids[prompt:]))
    return out


def test_pack_rows_fills_rows_within_capacity_and_places_each_example_once():
    lengths = [30, 5, 17, 60, 2, 44, 9, 9, 31]
    rows = pack_rows(lengths, capacity=64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) == 4  # 207 tokens: at least ceil(207 / 64) = 4 rows


@pytest.mark.parametrize("make", [_gpt2, _qwen2], ids=["gpt2-learned-positions", "qwen2-rotary"])
def test_packed_batch_has_the_loss_and_gradients_of_the_padded_batch(make):
    model = make().train()
    batch = _examples(9)
    padded = collate_padded(batch, 0, torch.device("cpu"))
    packed = collate_packed(batch, 64, 0, torch.device("cpu"))
    assert packed.tokens == padded.tokens == sum(len(e.input_ids) for e in batch)
    assert packed.slots < padded.slots  # the point of packing: fewer wasted slots
    grads = []
    for b in (padded, packed):
        model.zero_grad()
        loss = causal_lm_loss(model, b.input_ids, b.labels, b.attention_mask, b.position_ids, chunked=False)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    for g0, g1 in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g0, g1, atol=1e-5, rtol=1e-4)


def test_without_position_ids_packed_examples_would_attend_to_each_other():
    # The control for the test above: the same packed rows as one causal sequence give another loss.
    model = _gpt2().train()
    batch = _examples(9)
    packed = collate_packed(batch, 64, 0, torch.device("cpu"))
    padded = collate_padded(batch, 0, torch.device("cpu"))
    right = causal_lm_loss(model, padded.input_ids, padded.labels, padded.attention_mask, chunked=False)
    leaky = causal_lm_loss(model, packed.input_ids, packed.labels, chunked=False)
    assert abs(float(right.detach()) - float(leaky.detach())) > 1e-3


@pytest.mark.parametrize("chunk, with_bias", [(7, False), (64, True), (1000, False)])
def test_chunked_cross_entropy_equals_the_plain_one_with_gradients(chunk, with_bias):
    torch.manual_seed(1)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(500, 16, requires_grad=True)
    bias = torch.randn(500, requires_grad=True) if with_bias else None
    labels = torch.randint(0, 500, (50,))
    labels[::4] = -100
    plain = F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, ignore_index=-100)
    expected = torch.autograd.grad(plain, [hidden, weight] + ([bias] if with_bias else []))
    loss = chunked_cross_entropy(hidden, weight, labels, bias, chunk_tokens=chunk)
    got = torch.autograd.grad(loss * 1.0, [hidden, weight] + ([bias] if with_bias else []))
    torch.testing.assert_close(loss, plain, atol=1e-6, rtol=1e-6)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_model_loss_through_the_chunked_head_equals_the_logits_loss(method):
    spec = RetrainSpec(base_model="m", data_path="d", output_dir="o", method=method,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = prepare_model(_qwen2(), spec).train()
    b = collate_packed(_examples(6), 64, 0, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for chunked in (False, True):
        loss = causal_lm_loss(model, b.input_ids, b.labels, position_ids=b.position_ids, chunked=chunked,
                              chunk_tokens=16)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-6)
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1, atol=1e-6, rtol=1e-4)


def test_packed_chunked_training_follows_the_padded_plain_loss_curve():
    examples = _examples(24, seed=3)
    curves = {}
    for packing in (False, True):
        spec = RetrainSpec(base_model="m", data_path="d", output_dir="o", method="full", batch_size=8,
                           max_steps=6, learning_rate=1e-3, device="cpu", max_length=64,
                           packing=packing, chunked_loss=packing)
        model = prepare_model(_gpt2(), spec)
        m = fit(model, examples, spec, torch.device("cpu"), pad_id=0)
        curves[packing] = m
    assert [s for s, _ in curves[True]["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    for (_, a), (_, b) in zip(curves[False]["loss_curve"], curves[True]["loss_curve"]):
        assert abs(a - b) < 1e-3
    assert curves[True]["tokens"] == curves[False]["tokens"]
    assert curves[True]["padding_fraction"] < curves[False]["padding_fraction"]


@pytest.mark.slow
def test_compiled_backbone_trains_like_the_eager_one():
    # Slow: torch.compile on a CPU spends ~a minute compiling (measured: a 60-step demo job ran
    # 45x slower compiled, so `compile` stays off by default and is a GPU option).
    examples = _examples(16, seed=4)
    curves = []
    for compile_ in (False, True):
        spec = RetrainSpec(base_model="m", data_path="d", output_dir="o", method="lora", batch_size=8, max_steps=4,
                           device="cpu", max_length=64, packing=True, compile=compile_, target_modules=["c_attn"])
        model = prepare_model(_gpt2(), spec)
        curves.append(fit(model, examples, spec, torch.device("cpu"), pad_id=0)["loss_curve"])
    assert [s for s, _ in curves[1]] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(*curves):
        assert abs(a - b) < 1e-4
