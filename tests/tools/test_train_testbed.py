"""tools/train_testbed.py and moss_models.testbed: the two training stages on tiny sizes, resume, and the losses."""

import json

import pytest
import torch
from safetensors.torch import load_file

from moss_eval.quality.shapes import ShapesDataset, collate_shapes, vocabulary
from moss_models.infinity import BSQVAE, InfinityFamily, InfinityTransformer
from moss_models.infinity.text import TextBatch
from moss_models.testbed import (
    TESTBED,
    TESTBED_SIDES,
    TESTBED_TEXT_LAYERS,
    WordTextEncoder,
    cropped_grids,
    drop_conditions,
    grow_depth,
    make_spec,
    quantize_latent,
    scale_loss_weights,
    self_correcting_teacher_forcing,
    spec_from_record,
    teacher_forcing,
    transformer_losses,
    vae_losses,
)
from moss_models.testbed.trained import load_text_encoder, read_card
from moss_run.errors import UserError
from moss_run.train import run_training

from .conftest import compose_config

TINY_ARCH = "model.arch={depth:2,embed_dim:32,num_heads:2,block_chunks:1}"
SMOKE = ["model.sides=[1,2,4]", "model.vae={codebook_dim:16}", "data.size=32", TINY_ARCH, "train.ckpt_every=2", "train.log_every=1",
         "train.progress_bar=false", "vae.batch_size=4", "vae.crop=16", "transformer.batch_size=4"]  # fmt: skip


def cont_overrides(out_dir, init):
    return [*SMOKE, f"out_dir={out_dir}", f"transformer.init_from={init}", "stage=transformer"]


def tiny_spec(**changes):
    arch = {"depth": 2, "embed_dim": 32, "num_heads": 2, "block_chunks": 1}
    return make_spec([1, 2, 4], {"codebook_dim": 16}, **(arch | changes))


def shapes_batch(n: int, size: int = 32):
    return collate_shapes([ShapesDataset(0, size, n)[i] for i in range(n)])


def test_the_shipped_testbed_shapes():
    spec = make_spec()
    assert spec.sides == TESTBED_SIDES == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert spec.resolution == 128 and spec.config.vae.patch_size == 8 and spec.config == TESTBED
    assert spec.schedule().grids[-1] == spec.schedule().rope_grid == (16, 16)
    assert spec.schedule().num_tokens == 680
    with pytest.raises(ValueError, match=r"sides=\[2, 4\] must start at 1"):
        make_spec([2, 4])


def test_vae_round_trips_shapes_and_quantizes_like_encode():
    spec = tiny_spec()
    torch.manual_seed(0)
    vae = BSQVAE(spec.config.vae)
    images, _, _ = shapes_batch(2)
    z = vae.encoder(images)
    assert z.shape == (2, spec.config.vae.codebook_dim, 4, 4)  # 8× down
    summed, bits = quantize_latent(vae, z, spec.grids)
    ref_summed, ref_bits = vae.encode(images, list(spec.grids))
    assert torch.equal(summed, ref_summed) and all(
        torch.equal(a, b) for a, b in zip(bits, ref_bits, strict=True)
    )
    d = spec.config.vae.codebook_dim  # bits per token
    assert [tuple(b.shape) for b in bits] == [(2, s, s, d) for s in (1, 2, 4)]
    assert vae.decode(summed).shape == images.shape
    out = vae_losses(vae, images, spec.grids)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"] > out["mse"] > 0
    assert (
        vae.encoder.conv_in.conv.weight.grad.abs().sum() > 0
    )  # the straight-through path reaches the encoder
    assert cropped_grids(TESTBED_SIDES, 8) == [(s, s) for s in (1, 2, 3, 4, 5, 6, 8)]


def test_word_encoder_covers_the_captions():
    words = vocabulary()
    enc = WordTextEncoder(words, 16, 24, strict=True)
    _, captions, _ = shapes_batch(4)
    text = enc.encode(captions)
    assert text.kv_compact.shape == (sum(len(c.split()) + 1 for c in captions), 16)
    assert text.lens == [len(c.split()) + 1 for c in captions]
    assert enc.token_ids("A red, circle.") == [enc.ids["a"], enc.ids["red"], enc.ids["circle"], 0]
    with pytest.raises(ValueError, match="'fox' of prompt"):
        enc.encode(["a red fox"])
    loose = WordTextEncoder(words, 16, 4)
    assert loose.token_ids("a red fox on snow") == [loose.ids["a"], loose.ids["red"], 1, 0]  # <unk>, cut to 4
    with pytest.raises(ValueError, match="repeated words"):
        WordTextEncoder(["red", "red"], 16, 4)


def test_the_contextual_word_encoder_binds_words_to_their_neighbours():
    words = vocabulary()
    swapped = [
        "a red circle and a blue square on a plain background",
        "a blue circle and a red square on a plain background",
    ]
    torch.manual_seed(0)
    bag = WordTextEncoder(words, 16, 24)
    a, b = (bag.encode([p]).kv_compact for p in swapped)
    # a bag of words: the same features, permuted, so the condition cannot say which shape is red
    assert torch.equal(a.sort(dim=0).values, b.sort(dim=0).values)
    context = WordTextEncoder(words, 16, 24, layers=2, heads=2)
    a, b = (context.encode([p]).kv_compact for p in swapped)
    assert not torch.allclose(a.sort(dim=0).values, b.sort(dim=0).values, atol=1e-3)
    # each prompt's features do not depend on the others in its batch (padding is masked)
    batch = context.encode([*swapped, "two red stars on a noisy background"])
    alone = context.encode(["two red stars on a noisy background"]).kv_compact
    torch.testing.assert_close(batch.select(2), alone, atol=1e-5, rtol=1e-5)
    # identity start: the word embeddings exactly (how a bag-of-words export is continued with layers)
    context.start_context_as_identity()
    ids = torch.tensor(context.token_ids(swapped[0]))
    assert torch.equal(context.encode(swapped[:1]).kv_compact, context.embedding(ids))
    with pytest.raises(ValueError, match="heads=3 must be >= 1 and divide channels=16"):
        WordTextEncoder(words, 16, 24, layers=1, heads=3)


def _per_prompt_encode(enc: WordTextEncoder, prompts):
    """The plain reference of WordTextEncoder.encode: a tensor per prompt, padded, each row sliced back out."""
    ids = [torch.tensor(enc.token_ids(p)) for p in prompts]
    lens = [len(i) for i in ids]
    if not enc.layers:
        return TextBatch.from_features(list(enc.embedding(torch.cat(ids)).split(lens)))
    padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
    positions = torch.arange(padded.shape[1])
    pad = positions[None, :] >= torch.tensor(lens)[:, None]
    x = enc.context(enc.embedding(padded) + enc.position(positions), src_key_padding_mask=pad)
    return TextBatch.from_features([row[:n] for row, n in zip(x, lens, strict=True)])


@pytest.mark.parametrize("layers", [0, 2])
def test_packed_text_paths_equal_their_per_prompt_references(layers):
    """encode, drop_conditions and with_unconditional lay a batch out on the host and gather once (a GPU batch
    of 256 prompts paid a copy and a slice per prompt): the values are the per-prompt code's exactly, and so are
    the gradients up to the order in which a shared row's terms are summed."""
    torch.manual_seed(0)
    enc = WordTextEncoder(vocabulary(), 16, 24, layers=layers, heads=2)
    _, prompts, _ = shapes_batch(7)
    ref = _per_prompt_encode(enc, prompts)
    text = enc.encode(prompts)
    assert torch.equal(text.kv_compact, ref.kv_compact) and text.lens == ref.lens
    assert torch.equal(text.cu_seqlens, ref.cu_seqlens) and text.cu_seqlens.dtype == torch.int32
    uncond = torch.randn(24, 16, requires_grad=True)
    drop = [False, True, False, False, True, True, False]
    dropped = drop_conditions(text, uncond, drop)
    feats = [uncond[:n] if d else ref.select(i) for i, (n, d) in enumerate(zip(ref.lens, drop, strict=True))]
    assert torch.equal(dropped.kv_compact, torch.cat(feats)) and dropped.lens == ref.lens
    weights = torch.randn_like(dropped.kv_compact)
    (dropped.kv_compact * weights).sum().backward()
    grads = {
        n: p.grad.clone() for n, p in [("uncond", uncond), *enc.named_parameters()] if p.grad is not None
    }
    uncond.grad = None
    enc.zero_grad()
    (torch.cat(feats) * weights).sum().backward()
    # the same sums, in another order where a row of cfg_uncond serves several dropped prompts
    assert set(grads) == {n for n, p in [("uncond", uncond), *enc.named_parameters()] if p.grad is not None}
    for n, p in [("uncond", uncond), *enc.named_parameters()]:
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-6, atol=1e-6, msg=n)
    cfg = text.with_unconditional(uncond)
    assert torch.equal(cfg.kv_compact, torch.cat([ref.kv_compact, *(uncond[:n] for n in ref.lens)]))
    assert cfg.lens == ref.lens * 2
    with pytest.raises(ValueError, match="feature rows"):
        TextBatch.from_packed(text.kv_compact[:-1], text.lens)
    with pytest.raises(ValueError, match="at least one token"):
        TextBatch.from_packed(text.kv_compact[:0], [0])


def test_the_inference_qk_normalisation_backpropagates():
    """Training differentiates through moss-attention's ``cosine_qk_rope`` (no in-place op on a saved tensor)."""
    from moss_attention import InfinityRope2D, cosine_qk_rope, gather_rope_angles, precompute_rope_tables

    tables = precompute_rope_tables(InfinityRope2D(16, ref_grid=(4, 4)), [(1, 1), (2, 2), (4, 4)])
    ids = torch.tensor([0, 1, 1, 1, 1] + [2] * 16)
    rows = torch.tensor([0, 0, 0, 1, 1] + [r for r in range(4) for _ in range(4)])
    cols = torch.tensor([0, 0, 1, 0, 1] + [c for _ in range(4) for c in range(4)])
    angles = gather_rope_angles(tables, ids, rows, cols, batch=2)
    qk = torch.randn(2, 21, 2, 3, 16, requires_grad=True)
    mult = (torch.rand(3) + 1).requires_grad_()
    cosine_qk_rope(qk, mult, angles).square().sum().backward()
    assert qk.grad is not None and torch.isfinite(qk.grad).all() and mult.grad.abs().sum() > 0


def test_transformer_overfits_a_fixed_batch():
    spec = tiny_spec()
    torch.manual_seed(0)
    vae = BSQVAE(spec.config.vae)
    tf = InfinityTransformer(spec.config).init_random(0)
    enc = WordTextEncoder(vocabulary(), spec.config.text_channels, spec.config.text_maxlen, strict=True)
    family = InfinityFamily(tf, vae, enc)
    images, captions, _ = shapes_batch(2)
    _, bits = vae.encode(images, list(spec.grids))
    inputs, labels = teacher_forcing(family, bits, spec.grids)
    d = spec.config.vae.codebook_dim
    assert inputs.shape == (2, 4 + 16, d) and labels.shape == (2, 1 + 4 + 16, d)
    opt = torch.optim.Adam([*tf.parameters(), *enc.parameters()], lr=3e-3)
    dropped = transformer_losses(family, enc, images, captions, spec.schedule(), drop=[True, False])
    dropped["loss"].backward()
    assert tf.cfg_uncond.grad.abs().sum() > 0  # a dropped prompt trains the unconditional features CFG uses
    losses = []
    for step in range(12):
        out = transformer_losses(family, enc, images, captions, spec.schedule(), drop=[step % 3 == 0, False])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert set(out) >= {"loss", "bit_acc", "loss_s0", "loss_s1", "loss_s2"}
    assert enc.embedding.weight.grad.abs().sum() > 0  # the word embeddings learn with the transformer
    assert losses[-1] < 0.8 * losses[0], losses


def test_scale_reweighting_is_infinitys_and_only_moves_weight_between_scales():
    grids = [(1, 1), (2, 2), (4, 4)]
    weights = scale_loss_weights(grids)
    # Infinity's trainer: sqrt(area_last / area_scale) per token, normalised -> 4, 2 (x4), 1 (x16) over 28
    expected = torch.tensor([4.0] + [2.0] * 4 + [1.0] * 16) / 28
    torch.testing.assert_close(weights, expected)
    assert [round(float(p.sum()), 4) for p in weights.split([1, 4, 16])] == [
        round(4 / 28, 4),
        round(8 / 28, 4),
        round(16 / 28, 4),
    ]

    spec = tiny_spec()
    torch.manual_seed(0)
    vae = BSQVAE(spec.config.vae)
    enc = WordTextEncoder(vocabulary(), spec.config.text_channels, spec.config.text_maxlen, strict=True)
    family = InfinityFamily(InfinityTransformer(spec.config).init_random(0), vae, enc)
    images, captions, _ = shapes_batch(2)
    plain = transformer_losses(family, enc, images, captions, spec.schedule())
    weighted = transformer_losses(family, enc, images, captions, spec.schedule(), reweight_by_scale=True)
    # the same logits: the token mean is reported alike, and the weighted loss is the scales' losses in
    # proportion to their sides (1:2:4) rather than their areas (1:4:16)
    torch.testing.assert_close(weighted["token_loss"], plain["token_loss"])
    torch.testing.assert_close(plain["loss"], plain["token_loss"])
    per_scale = torch.stack([weighted[f"loss_s{s}"] for s in range(3)])
    torch.testing.assert_close(weighted["loss"], (per_scale * torch.tensor([4.0, 8.0, 16.0]) / 28).sum())
    assert not torch.allclose(weighted["loss"], plain["loss"])


def test_prefix_images_add_samples_to_the_coarse_terms_of_the_same_objective():
    spec = tiny_spec()
    torch.manual_seed(0)
    vae = BSQVAE(spec.config.vae)
    enc = WordTextEncoder(vocabulary(), spec.config.text_channels, spec.config.text_maxlen, strict=True)
    tf = InfinityTransformer(spec.config).init_random(0)
    family = InfinityFamily(tf, vae, enc)
    images, captions, _ = shapes_batch(2)
    grids, sched = spec.grids, spec.schedule()
    # block-causal attention: a sequence cut after scale 2 gives the whole sequence's logits of scales 1 and 2
    _, bits = vae.encode(images, list(grids))
    inputs, _ = teacher_forcing(family, bits, grids)
    text, rope = enc.encode(captions), family.rope_tables(sched)
    whole = tf.teacher_forced_logits(text, inputs, grids, rope)
    cut = tf.teacher_forced_logits(text, inputs[:, :4], grids[:2], rope)
    torch.testing.assert_close(cut, whole[:, :5], atol=1e-5, rtol=1e-5)

    # the same two scenes again as prefix images: their terms of scales 1-2 equal the whole images', so the loss
    # (coarse terms averaged over all four, the rest over the whole two) is the plain loss of the two
    plain = transformer_losses(family, enc, images, captions, sched, [True, False], reweight_by_scale=True)
    doubled = transformer_losses(
        family, enc, torch.cat([images, images]), [*captions, *captions], sched, [True, False, True, False],
        reweight_by_scale=True, prefix_images=2, prefix_scales=2,
    )  # fmt: skip
    torch.testing.assert_close(doubled["loss"], plain["loss"], atol=1e-6, rtol=1e-6)
    for key in ("token_loss", "bit_acc", "loss_s0", "loss_s2"):  # reported over the whole images only
        torch.testing.assert_close(doubled[key], plain[key], atol=1e-6, rtol=1e-6)
    assert "prefix_loss" in doubled and "prefix_loss" not in plain
    # other scenes as prefix images move only the coarse terms, and their gradient reaches the weights
    other = torch.cat([images, shapes_batch(4)[0][2:]])
    mixed = transformer_losses(
        family, enc, other, [*captions, "a red circle", "two blue stars"], sched, reweight_by_scale=True,
        prefix_images=2, prefix_scales=2,
    )  # fmt: skip
    assert not torch.allclose(mixed["loss"], plain["loss"])
    mixed["loss"].backward()
    assert tf.word_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"prefix_images=2 must leave at least one whole image of 2"):
        transformer_losses(family, enc, images, captions, sched, prefix_images=2, prefix_scales=1)
    with pytest.raises(ValueError, match=r"prefix_scales=3 must be between 1 and 2"):
        transformer_losses(family, enc, other, captions * 2, sched, prefix_images=2, prefix_scales=3)


def test_grown_depth_computes_what_the_shallow_model_did_and_its_new_blocks_learn():
    shallow = tiny_spec()  # 2 blocks in 1 chunk
    deep = tiny_spec(depth=4, block_chunks=2)
    torch.manual_seed(0)
    vae = BSQVAE(shallow.config.vae)
    enc = WordTextEncoder(vocabulary(), shallow.config.text_channels, shallow.config.text_maxlen, strict=True)
    small = InfinityTransformer(shallow.config).init_random(0)
    big = InfinityTransformer(deep.config).init_random(1)
    fresh = {k: v.clone() for k, v in big.state_dict().items()}
    big.load_state_dict(grow_depth(small.state_dict(), fresh, 2, 1, 4, 2), strict=True)
    # old block 1 is block 2 now (chunk 1, position 0); blocks 1 and 3 are new and keep their fresh weights
    torch.testing.assert_close(big.state_dict()["block_chunks.1.module.0.sa.mat_qkv.weight"],
                               small.state_dict()["block_chunks.0.module.1.sa.mat_qkv.weight"])  # fmt: skip
    torch.testing.assert_close(big.state_dict()["block_chunks.0.module.1.sa.mat_qkv.weight"],
                               fresh["block_chunks.0.module.1.sa.mat_qkv.weight"])  # fmt: skip
    images, captions, _ = shapes_batch(2)
    sched = shallow.schedule()
    losses = [
        transformer_losses(InfinityFamily(tf, vae, enc), enc, images, captions, sched, [False, True])
        for tf in (small, big)
    ]
    for key in ("loss", "bit_acc", "loss_s0", "loss_s2"):
        torch.testing.assert_close(losses[1][key], losses[0][key], atol=1e-5, rtol=1e-5)
    losses[1]["loss"].backward()
    # zero outputs, but their gradient is not: they learn (at this width Infinity's FFN rounds its hidden size
    # to a multiple of 256, which is 0, so only the FFN's output bias is left)
    for name in ("sa.proj.weight", "sa.proj.bias", "ca.proj.weight", "ffn.fc2.bias"):
        param = big.get_parameter(f"block_chunks.1.module.1.{name}")
        assert not param.any() and param.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match=r"depth 2 \(1 chunks\) cannot grow to 3"):
        grow_depth(small.state_dict(), fresh, 2, 1, 3, 1)


def test_self_correction_flips_inputs_and_labels_correct_them():
    spec = tiny_spec()
    torch.manual_seed(0)
    vae = BSQVAE(spec.config.vae)
    family = InfinityFamily(InfinityTransformer(spec.config).init_random(0), vae)
    images, _, _ = shapes_batch(4)
    _, bits = vae.encode(images, list(spec.grids))
    plain = teacher_forcing(family, bits, spec.grids)
    z = vae.encoder(images)
    # strength 0 is plain teacher forcing of the VAE's own bits, exactly
    same = self_correcting_teacher_forcing(family, z, spec.grids, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(same, plain, strict=True))

    def flipped(seed):
        return self_correcting_teacher_forcing(
            family, z, spec.grids, 1.0, torch.Generator().manual_seed(seed)
        )

    (inputs, labels), again = flipped(3), flipped(3)
    assert torch.equal(inputs, again[0]) and torch.equal(labels, again[1])  # the step's generator decides
    seed = next(s for s in range(20) if not torch.equal(flipped(s)[0], plain[0]))  # p > 0 was drawn
    inputs, labels = flipped(seed)
    assert torch.equal(labels[:, :1], plain[1][:, :1])  # the first scale's labels are the VAE's own
    assert not torch.equal(labels[:, 1:], plain[1][:, 1:])  # later ones correct the flipped sum
    with pytest.raises(ValueError, match=r"strength=1\.5"):
        self_correcting_teacher_forcing(family, z, spec.grids, 1.5)


def test_stages_checkpoint_export_and_resume(tmp_path):
    out = tmp_path / "testbed"
    common = [*SMOKE, f"out_dir={out}", "model.text_layers=0"]  # a bag-of-words encoder, upgraded below
    vae = run_training(compose_config(["stage=vae", "vae.steps=2", *common], tmp_path, "train_testbed"))
    assert vae["steps"] == 2 and (out / "vae" / "checkpoints" / "last.ckpt").exists()
    assert set(load_file(out / "vae.safetensors")) == set(BSQVAE(tiny_spec().config.vae).state_dict())

    cfg = compose_config(["stage=transformer", "transformer.steps=2", *common], tmp_path, "train_testbed")
    first = run_training(cfg)
    ckpt = out / "transformer" / "checkpoints" / "last.ckpt"
    assert first["steps"] == 2 and torch.load(ckpt, weights_only=True)["global_step"] == 2
    card = json.loads((out / "testbed.json").read_text())
    assert card["sides"] == [1, 2, 4] and card["config"]["depth"] == 2 and card["vocabulary"] == vocabulary()
    assert card["training"]["vae"]["steps"] == 2 and card["training"]["transformer"]["steps"] == 2
    for stage in ("vae", "transformer"):  # which torch and CPU made the weights (numerics differ across CPUs)
        machine = card["training"][stage]["machine"]
        assert machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1 and "cpu_isa" in machine
    assert spec_from_record(card) == tiny_spec(text_layers=0)  # the card describes the trained shapes exactly
    metrics = (out / "logs" / "transformer" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in metrics.splitlines()[0]

    # rerun with more steps: it continues from step 2 (not from 0) and the stream from item 2 × batch
    before_resume = torch.load(ckpt, weights_only=True)["train_seconds"]
    cfg = compose_config(["stage=transformer", "transformer.steps=3", *common], tmp_path, "train_testbed")
    resumed = run_training(cfg)
    assert resumed["steps"] == 3 and torch.load(ckpt, weights_only=True)["global_step"] == 3
    # the card's training time sums the fit of both calls (the first one's is in its checkpoint), not only the
    # resumed one
    seconds = json.loads((out / "testbed.json").read_text())["training"]["transformer"]
    total, this_run = seconds["seconds"], seconds["seconds_this_run"]
    assert 0 < before_resume <= total + 0.05 <= before_resume + this_run + 0.15  # (the card rounds to 0.1 s)
    assert (out / "logs" / "transformer" / "csv" / "version_1" / "metrics.csv").exists()
    tf_state = load_file(out / "transformer.safetensors")
    assert tf_state["word_embed.weight"].shape == (32, tiny_spec().config.vae.codebook_dim)

    # continue from that export in a new folder (across sessions): its weights and VAE are the start, the card
    # records the lineage; at a vanishing learning rate one step leaves the weights where they were. The run has
    # the default contextual text layers, the export none: its word embeddings load, the layers start as identity
    out2 = tmp_path / "continued"
    cont = compose_config(
        [*cont_overrides(out2, out), "transformer.steps=1", "transformer.lr=1e-12",
         "transformer.warmup=0", "transformer.prefix.images=2", "transformer.prefix.scales=2"],
        tmp_path, "train_testbed",
    )  # fmt: skip
    assert run_training(cont)["steps"] == 1
    # with prefix images (4 whole scenes and 2 cut after scale 2 per step), their loss is logged beside the rest
    metrics = (out2 / "logs" / "transformer" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/prefix_loss" in metrics.splitlines()[0]
    assert (out2 / "vae.safetensors").read_bytes() == (out / "vae.safetensors").read_bytes()
    before, after = load_file(out / "transformer.safetensors"), load_file(out2 / "transformer.safetensors")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    lineage = json.loads((out2 / "testbed.json").read_text())["training"]["transformer"]
    assert lineage["total_steps"] == 1 + 3 and lineage["init_from"]["folder"] == str(out)
    assert lineage["init_from"]["text_layers_added"] == TESTBED_TEXT_LAYERS
    assert lineage["init_from"]["data"]["seed"] == 0 and lineage["init_from"]["seed"] == 0
    bag, context = (
        load_text_encoder(card, spec_from_record(card), o / "text.safetensors", "cpu")
        for o, card in ((o, read_card(o / "testbed.json")) for o in (out, out2))
    )
    assert bag.layers == 0 and context.layers == TESTBED_TEXT_LAYERS
    captions = shapes_batch(3)[1]
    torch.testing.assert_close(
        context.encode(captions).kv_compact, bag.encode(captions).kv_compact, atol=1e-5, rtol=0
    )
    with pytest.raises(UserError, match=r"holds a testbed of other shapes"):
        run_training(
            compose_config([*cont_overrides(out2, out), "model.sides=[1,2,3,4]"], tmp_path, "train_testbed")
        )
    # a deeper model.arch.depth (a multiple of the export's) grows it: the export's blocks with identity blocks
    # between them, so the first step starts from the export's loss; the card records the growth
    out3 = tmp_path / "deeper"
    deeper = [a for a in cont_overrides(out3, out) if a != TINY_ARCH]
    deep_arch = "model.arch={depth:4,embed_dim:32,num_heads:2,block_chunks:2}"
    grown = compose_config([*deeper, deep_arch, "transformer.steps=1", "transformer.lr=1e-12",
                            "transformer.warmup=0", "transformer.self_correction=0"], tmp_path, "train_testbed")  # fmt: skip
    assert run_training(grown)["steps"] == 1
    card = read_card(out3 / "testbed.json")
    assert (
        card["config"]["depth"] == 4 and card["training"]["transformer"]["init_from"]["depth_grown_from"] == 2
    )
    state = load_file(out3 / "transformer.safetensors")
    assert not state["block_chunks.0.module.1.ffn.fc2.weight"].abs().gt(1e-6).any()  # still (nearly) identity
    torch.testing.assert_close(state["block_chunks.1.module.0.ffn.fc1.weight"],
                               before["block_chunks.0.module.1.ffn.fc1.weight"], atol=1e-6, rtol=0)  # fmt: skip
    with pytest.raises(UserError, match=r"only model.arch.depth may differ, as a multiple"):
        run_training(compose_config([*deeper, "model.arch={depth:3,embed_dim:32,num_heads:2,block_chunks:1}"],
                                    tmp_path, "train_testbed"))  # fmt: skip

    with pytest.raises(UserError, match=r"resume=false but .* holds checkpoints"):
        run_training(
            compose_config(["stage=transformer", "resume=false", *common], tmp_path, "train_testbed")
        )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["stage=decoder"], "stage='decoder' is not allowed"),
        (["data.size=64"], r"data.size=64 does not match the testbed: .* = 128"),
        (
            ["data.layout=grid"],
            r"data.layout='grid' is not allowed: one of \['random', 'ordered', 'canonical'\]",
        ),
        (["data.relation_rate=1.5"], r"data.relation_rate=1.5 is not allowed: a number >= 0.0 and <= 1.0"),
        (["vae.crop=20"], r"vae.crop=20 is not allowed: null or a multiple of 8"),
        (["transformer.cond_drop=2", "stage=transformer"], r"transformer.cond_drop=2 is not allowed"),
        (
            ["transformer.self_correction=-0.1", "stage=transformer"],
            r"transformer.self_correction=-0.1 is not",
        ),
        (
            ["transformer.reweight_by_scale=1", "stage=transformer"],
            r"transformer.reweight_by_scale=1 is not allowed: true or false",
        ),
        (
            ["stage=transformer", "transformer.prefix.images=8", "transformer.prefix.scales=10"],
            r"transformer.prefix.scales=10 is not allowed: fewer than the schedule's 10 scales",
        ),
        (
            ["stage=transformer", "transformer.prefix.images=-1"],
            r"prefix.images=-1 is not allowed: an int >= 0",
        ),
        (["stage=transformer"], "needs the trained VAE"),
        (["model.arch={embed_dim:33}"], r"embed_dim=33 must be divisible by num_heads=2"),
        (["model.text_layers=-1"], r"text_layers=-1: expected an int >= 0"),
        (["transformer.precision=fp8", "stage=transformer"], r"transformer.precision='fp8' is not allowed"),
        (
            ["stage=transformer", "transformer.init_from=/no/such/export"],
            r"init_from='/no/such/export': .*lacks",
        ),
        (["train.accelerator=tpu"], r"train.accelerator='tpu' is not allowed: one of \['cpu', 'gpu'\]"),
        (["train.max_time=8min"], r"train.max_time='8min' is not allowed: null or \"DD:HH:MM:SS\""),
        (["data.workers=-1"], r"data.workers=-1 is not allowed: an int >= 0"),
    ],
)
def test_bad_settings(tmp_path, overrides, match):
    cfg = compose_config([f"out_dir={tmp_path / 'tb'}", *overrides], tmp_path, "train_testbed")
    with pytest.raises(UserError, match=match):
        run_training(cfg)
    assert not (tmp_path / "tb" / "vae" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_without_cuda_is_refused_before_anything_is_built(tmp_path):
    cfg = compose_config([f"out_dir={tmp_path / 'tb'}", "train.accelerator=gpu"], tmp_path, "train_testbed")
    with pytest.raises(
        UserError, match=r"train.accelerator='gpu' is not allowed on this machine: .* no CUDA"
    ):
        run_training(cfg)
    assert not (tmp_path / "tb").exists()


def test_workers_render_the_same_stream_and_max_time_stops_with_an_export(tmp_path):
    """The GPU recipe's two settings on CPU: scenes rendered in worker processes are the same batches in the same
    order (one step gives bit-identical weights), and a run stopped by max_time is checkpointed and exported at
    the step it reached, like a finished one."""
    runs = {}
    for name, extra in (("inline", ["vae.steps=1"]), ("workers", ["vae.steps=1", "data.workers=2"]),
                        ("timed", ["vae.steps=1000", "data.workers=1", "train.max_time=00:00:00:01"])):  # fmt: skip
        out = tmp_path / name
        runs[name] = run_training(compose_config(["stage=vae", *SMOKE, f"out_dir={out}", *extra], tmp_path,
                                                 "train_testbed"))  # fmt: skip
    inline, workers = (load_file(tmp_path / n / "vae.safetensors") for n in ("inline", "workers"))
    assert runs["inline"]["steps"] == runs["workers"]["steps"] == 1
    assert all(torch.equal(inline[k], workers[k]) for k in inline)
    timed = runs["timed"]
    assert 1 <= timed["steps"] < 1000 and (tmp_path / "timed" / "vae.safetensors").exists()
    assert torch.load(timed["checkpoint"], weights_only=True)["global_step"] == timed["steps"]
