"""The GPU speed techniques are exact: packed batches give the loss (and gradients) of
padded ones, the chunked cross-entropy (eager or compiled) equals the plain one, and a packed
training run follows the padded run's loss curve; bf16-pure trains like fp32, keeps updates
too small for bf16 in its fp32 masters and resumes exactly; under torch.compile plain batches
reach SDPA as causal with no mask while packed ones keep theirs; skipping peft's fp32 input
copy under autocast changes nothing. Tiny random-init GPT-2 and Qwen2 models on CPU (one
test on CUDA, skipped without a GPU)."""

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
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=300,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )  # exact comparisons


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=300,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            tie_word_embeddings=True,
        )
    )


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
    spec = RetrainSpec(
        base_model="m",
        data_path="d",
        output_dir="o",
        method=method,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = prepare_model(_qwen2(), spec).train()
    b = collate_packed(_examples(6), 64, 0, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for chunked in (False, True):
        loss = causal_lm_loss(
            model, b.input_ids, b.labels, position_ids=b.position_ids, chunked=chunked, chunk_tokens=16
        )
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-6)
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1, atol=1e-6, rtol=1e-4)


def test_packed_chunked_training_follows_the_padded_plain_loss_curve():
    examples = _examples(24, seed=3)
    curves = {}
    for packing in (False, True):
        spec = RetrainSpec(
            base_model="m",
            data_path="d",
            output_dir="o",
            method="full",
            batch_size=8,
            max_steps=6,
            learning_rate=1e-3,
            device="cpu",
            max_length=64,
            packing=packing,
            chunked_loss=packing,
        )
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
        spec = RetrainSpec(
            base_model="m",
            data_path="d",
            output_dir="o",
            method="lora",
            batch_size=8,
            max_steps=4,
            device="cpu",
            max_length=64,
            packing=True,
            compile=compile_,
            target_modules=["c_attn"],
        )
        model = prepare_model(_gpt2(), spec)
        curves.append(fit(model, examples, spec, torch.device("cpu"), pad_id=0)["loss_curve"])
    assert [s for s, _ in curves[1]] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(*curves):
        assert abs(a - b) < 1e-4


# --- bf16-pure, causal SDPA under compile, compiled loss, LoRA input cast ---------------------


def _fit(model, method, precision, examples, progress=None, **kw):
    spec = RetrainSpec(
        base_model="m",
        data_path="d",
        output_dir=kw.pop("output_dir", "o"),
        method=method,
        batch_size=kw.pop("batch_size", 8),
        max_steps=kw.pop("max_steps", 8),
        learning_rate=kw.pop("learning_rate", 3e-3),
        device="cpu",
        max_length=64,
        packing=True,
        precision=precision,
        warmup_ratio=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        **kw,
    )
    model = prepare_model(model, spec)
    return model, fit(model, examples, spec, torch.device("cpu"), pad_id=0, progress=progress)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bf16_pure_trains_like_fp32(method):
    examples = _examples(16, seed=5)  # one batch, every step: the loss should fall steadily
    lr = {"full": 3e-3, "lora": 2e-2}[method]
    curves = {p: _fit(_qwen2(), method, p, examples, batch_size=16, learning_rate=lr)[1] for p in ("fp32", "bf16-pure")}
    fp32, pure = (curves[p]["loss_curve"] for p in ("fp32", "bf16-pure"))
    assert curves["bf16-pure"]["precision"] == "bf16-pure"
    assert pure[-1][1] < pure[0][1] - 0.2  # it learns
    for (_, a), (_, b) in zip(fp32, pure):
        assert abs(a - b) < 0.01  # and follows the fp32 curve within bf16 rounding


def test_bf16_pure_keeps_updates_too_small_for_bf16_in_fp32_masters():
    model = _qwen2().to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, _ = _fit(model, "full", "bf16-pure", _examples(16, seed=6), max_steps=2, learning_rate=1e-6)
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())  # the model ends on its masters
    w = params["model.layers.0.mlp.down_proj.weight"]
    w0 = before["model.layers.0.mlp.down_proj.weight"]
    moved = (w != w0.float()).float().mean()
    kept_in_bf16 = (w.to(torch.bfloat16) == w0).float().mean()
    # ~2e-6 per weight: every weight moved, yet almost none by enough to change its bf16 value
    # (pure bf16 weights would not have trained at all).
    assert moved > 0.99 and kept_in_bf16 > 0.95


def test_bf16_pure_resumes_from_a_checkpoint_exactly(tmp_path):
    examples = _examples(32, seed=7)

    def stop_at_3(step, total, loss):
        if step == 3:
            raise KeyboardInterrupt

    whole, _ = _fit(_qwen2(), "full", "bf16-pure", examples, output_dir=str(tmp_path / "a"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        _fit(
            _qwen2(),
            "full",
            "bf16-pure",
            examples,
            output_dir=str(tmp_path / "b"),
            checkpoint_every=2,
            progress=stop_at_3,
        )
    resumed, m = _fit(_qwen2(), "full", "bf16-pure", examples, output_dir=str(tmp_path / "b"), checkpoint_every=2)
    assert m["resumed_from_step"] == 2
    for (n, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n


def _capture_graphs(fn, *args, **kwargs):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(fn, backend=backend)(*args, **kwargs)
    torch._dynamo.reset()
    return out, [n for g in graphs for n in g.graph.nodes if "scaled_dot_product" in str(n.target)]


def test_under_compile_plain_batches_reach_sdpa_as_causal_and_packed_ones_keep_their_mask():
    from retrain.attention import use_causal_sdpa

    model = _qwen2().eval()
    model.config._attn_implementation = "sdpa"
    full_rows = collate_packed([Encoded({}, list(range(1, 33)), list(range(1, 33)))] * 2, 32, 0, torch.device("cpu"))
    packed = collate_packed(_examples(6), 64, 0, torch.device("cpu"))
    assert full_rows.position_ids is None and packed.position_ids is not None
    for b in (full_rows, packed):

        def loss(ids, b=b):
            return causal_lm_loss(model, ids, b.labels, position_ids=b.position_ids, chunked=False)

        eager = loss(b.input_ids)
        with use_causal_sdpa(model) as declare_plain:
            declare_plain(b.position_ids is None)
            compiled, sdpa = _capture_graphs(loss, b.input_ids)
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
        masked = [n.kwargs.get("attn_mask") is not None for n in sdpa]
        causal = [n.kwargs.get("is_causal") is True for n in sdpa]
        assert len(sdpa) == 2  # one per layer
        assert (masked, causal) == (([False] * 2, [True] * 2) if b is full_rows else ([True] * 2, [False] * 2))
    assert model.config._attn_implementation == "sdpa"  # restored on exit


def test_lora_layers_skip_the_fp32_input_copy_under_autocast_with_the_same_result():
    from retrain.precision import lora_input_cast

    spec = RetrainSpec(
        base_model="m", data_path="d", output_dir="o", method="lora", target_modules=["q_proj", "v_proj", "down_proj"]
    )
    model = prepare_model(_qwen2().to(torch.bfloat16), spec).train()
    b = collate_packed(_examples(6), 64, 0, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for cast in (True, False):
        with lora_input_cast(model, enabled=cast), torch.autocast("cpu", dtype=torch.bfloat16):
            assert {m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_A")} == {cast}
            loss = causal_lm_loss(model, b.input_ids, b.labels, position_ids=b.position_ids, chunk_tokens=16)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_A"))  # restored
    torch.testing.assert_close(results[0][0], results[1][0], atol=0, rtol=0)
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1, atol=1e-3, rtol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_chunked_loss_equals_the_eager_one(dtype):
    # Slow: Inductor compiles the per-chunk softmax on a CPU in ~5-20 s.
    torch.manual_seed(2)
    hidden = torch.randn(70, 16, dtype=dtype, requires_grad=True)
    weight = torch.randn(300, 16, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 300, (70,))
    labels[::3] = -100
    out = []
    for compiled in (False, True):
        loss = chunked_cross_entropy(hidden, weight, labels, chunk_tokens=32, compiled=compiled)
        out.append((loss.detach(), torch.autograd.grad(loss, [hidden, weight])))
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out[0][0], out[1][0], atol=tol, rtol=tol)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_pure_follows_autocast_and_reports_every_step_in_order():
    # On CUDA the loss is read one step late (no host sync per step): every step must still be
    # reported once, in order, and bf16-pure must train like bf16 autocast.
    examples = _examples(16, seed=5)
    seen, curves = {}, {}
    for precision in ("bf16", "bf16-pure"):
        seen[precision] = []
        spec = RetrainSpec(
            base_model="m",
            data_path="d",
            output_dir="o",
            method="full",
            batch_size=16,
            max_steps=6,
            learning_rate=3e-3,
            device="cuda",
            max_length=64,
            packing=True,
            precision=precision,
            warmup_ratio=0.0,
        )
        model = prepare_model(_qwen2().to("cuda"), spec)
        m = fit(
            model,
            examples,
            spec,
            torch.device("cuda"),
            pad_id=0,
            progress=lambda step, total, loss, p=precision: seen[p].append(step),
        )
        curves[precision] = [c for _, c in m["loss_curve"]]
    assert seen == {"bf16": [1, 2, 3, 4, 5, 6], "bf16-pure": [1, 2, 3, 4, 5, 6]}
    assert curves["bf16-pure"][-1] < curves["bf16-pure"][0] - 0.2
    for a, b in zip(curves["bf16"], curves["bf16-pure"]):
        assert abs(a - b) < 0.05
