"""LPIPS, HPSv2.1, ImageReward, FID and CLIP score on tiny random models saved to tmp, through the real load paths.

Every model here is random and tiny; nothing is downloaded. Each test compares the evaluator with an independent
computation: torchmetrics' own LPIPS on the same backbone file, the HPS / ImageReward formulas on the same modules,
the FID closed form, torchmetrics' CLIPScore on the same CLIP model.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from moss_eval.quality.base import EvalInput, MissingWeightsError, check_weights

from .conftest import write_run_dir

PROMPTS = ["a red cat", "a blue dog", "a photo of a cat"]


def write_run(path, images, prompts, moss="k2"):
    return write_run_dir(
        path, [{"image": im, "prompt": p} for im, p in zip(images, prompts, strict=True)], moss=moss
    )


def random_images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy() for _ in range(n)]


# ================================================================================================ LPIPS


def random_backbone(torchvision_name: str) -> dict[str, torch.Tensor]:
    """A random state dict of a torchvision classifier: random ``features``; the ``classifier`` LPIPS never reads
    as a stride-0 zero view, so the file stays small (AlexNet's classifier alone is 150 MB)."""
    import torchvision

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in getattr(torchvision.models, torchvision_name)().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(shape, generator=g) * 0.1
        if k.startswith("features.")
        else torch.zeros(()).expand(shape)
        for k, shape in shapes.items()
    }


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A random torchvision AlexNet saved where torchvision's own loader would cache the real one."""
    from moss_eval.quality.lpips import LPIPS_BACKBONES

    hub = tmp_path_factory.mktemp("torch_home")
    path = hub / "hub" / "checkpoints" / LPIPS_BACKBONES["alex"].file_name
    path.parent.mkdir(parents=True)
    torch.save(random_backbone("alexnet"), path)
    return path


def test_lpips_equals_torchmetrics_with_the_same_backbone(alexnet_file, monkeypatch):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    from moss_eval.quality.lpips import load_lpips

    ours = load_lpips("alex", alexnet_file)
    # torchmetrics' public metric reads the backbone from torchvision's cache, $TORCH_HOME/hub/checkpoints: the
    # same random file (a download attempt would fail here, there is no network).
    monkeypatch.setenv("TORCH_HOME", str(alexnet_file.parents[2]))
    reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="none", normalize=True)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 40, 48, generator=g), torch.rand(3, 3, 40, 48, generator=g)
    got = ours(a, b)
    want = reference(a, b).reshape(-1)
    assert got.shape == (3,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert bool((got > 0).all())
    assert ours(a, a.clone()).abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_lpips_checks_files_and_inputs(alexnet_file, tmp_path):
    from moss_eval.quality.lpips import load_lpips

    with pytest.raises(ValueError, match="lpips_net='resnet'"):
        load_lpips("resnet", alexnet_file)
    with pytest.raises(ValueError, match=r"lpips_weights is not set.*alexnet-owt-7be5be79\.pth"):
        load_lpips("alex", None)
    with pytest.raises(FileNotFoundError, match=r"lpips_weights=.*nope\.pth"):
        load_lpips("alex", tmp_path / "nope.pth")
    partial = {
        k: v for k, v in torch.load(alexnet_file, weights_only=True).items() if k != "features.3.weight"
    }
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"lacks 1 key.*features\.3\.weight"):
        load_lpips("alex", tmp_path / "partial.pth")
    model = load_lpips("alex", alexnet_file)
    with pytest.raises(ValueError, match="at least 31"):
        model(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        model(torch.full((1, 3, 32, 32), 2.0), torch.rand(1, 3, 32, 32))


# ================================================================================================ HPSv2.1

HPS_TINY = "moss-test-hps-tiny"


@pytest.fixture(scope="module")
def hps_files(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("hps")
    config = root / f"{HPS_TINY}.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {
                    "image_size": 32,
                    "layers": 1,
                    "width": 32,
                    "head_width": 16,
                    "patch_size": 16,
                },
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
            }
        )
    )
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(HPS_TINY, pretrained=None).eval()
    checkpoint = root / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, checkpoint)
    return model, config, checkpoint


def test_hps_equals_hand_computation(hps_files, tmp_path):
    import open_clip
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    from moss_eval.quality.preference import CLIP_MEAN, CLIP_STD, HPSEvaluator

    model, config, checkpoint = hps_files
    images = random_images(2, 48, 40)  # H=48 > W=40: resized to 32×27, padded 2 px left, 3 px right
    records = write_run(tmp_path / "run", images, PROMPTS[:2])
    ev = HPSEvaluator(checkpoint=str(checkpoint), model_name=HPS_TINY, model_config=str(config), batch_size=4)
    result = ev.evaluate(EvalInput(run_dir=tmp_path / "run", records=records))

    tokenizer = open_clip.get_tokenizer(HPS_TINY)
    want = []
    for image, prompt in zip(images, PROMPTS, strict=False):
        x = TF.to_tensor(Image.fromarray(image))
        x = TF.resize(x, [32, 27], interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = TF.normalize(TF.pad(x, [2, 0, 3, 0], fill=0), CLIP_MEAN, CLIP_STD)
        with torch.no_grad():
            f_img = model.encode_image(x[None])
            f_txt = model.encode_text(tokenizer([prompt]))
        want.append(float((f_img / f_img.norm()) @ (f_txt / f_txt.norm()).T))
    got = [result.per_image[r["id"]]["hps"] for r in records]
    assert got == pytest.approx(want, abs=1e-5)
    assert result.scores["hps_mean"] == pytest.approx(sum(want) / 2, abs=1e-5)
    assert result.scores["images"] == 2


def test_hps_checkpoint_is_loaded_strictly(hps_files, tmp_path):
    from moss_eval.quality.preference import load_hps_model

    model, config, _ = hps_files
    state = dict(model.state_dict())
    del state["ln_final.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing \['ln_final.weight'\], unexpected \['extra.weight'\]"):
        load_hps_model(tmp_path / "bad.pt", HPS_TINY, config)
    torch.save(model.state_dict(), tmp_path / "flat.pt")
    with pytest.raises(ValueError, match="expected a dict with a 'state_dict'"):
        load_hps_model(tmp_path / "flat.pt", HPS_TINY, config)
    with pytest.raises(ValueError, match="registers the architecture"):
        load_hps_model(tmp_path / "flat.pt", "ViT-H-14", config)


# ================================================================================================ ImageReward

TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=16,
)
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "cat", "dog", "photo", "of"]
TINY_TEXT = dict(
    vocab_size=len(BERT_WORDS) + 2,  # + BLIP's [DEC] and [ENC]
    hidden_size=32,
    encoder_hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=40,
)
UNUSED = {
    "blip.vision_proj.weight": torch.zeros(8, 32),
    "blip.vision_proj.bias": torch.zeros(8),
    "blip.text_proj.weight": torch.zeros(8, 32),
    "blip.text_proj.bias": torch.zeros(8),
    "blip.text_encoder.embeddings.position_ids": torch.arange(40)[None],
}


@pytest.fixture(scope="module")
def imagereward_files(tmp_path_factory):
    from moss_eval.quality.preference import (
        ImageRewardModel,
        imagereward_official_state_dict,
        imagereward_text_config,
        imagereward_vision_config,
    )

    root = tmp_path_factory.mktemp("imagereward")
    tokenizer = root / "bert-base-uncased"
    tokenizer.mkdir()
    (tokenizer / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n")
    torch.manual_seed(0)
    model = ImageRewardModel(
        imagereward_vision_config(**TINY_VISION), imagereward_text_config(**TINY_TEXT)
    ).eval()
    official = imagereward_official_state_dict(model, UNUSED)
    checkpoint = root / "ImageReward.pt"
    torch.save(official, checkpoint)
    return model, official, checkpoint, tokenizer


def test_imagereward_official_names():
    from moss_eval.quality.preference import _model_to_official_key, _official_to_model_key

    pairs = {
        "blip.visual_encoder.cls_token": "vision.embeddings.class_embedding",
        "blip.visual_encoder.pos_embed": "vision.embeddings.position_embedding",
        "blip.visual_encoder.patch_embed.proj.weight": "vision.embeddings.patch_embedding.weight",
        "blip.visual_encoder.blocks.11.attn.qkv.bias": "vision.encoder.layers.11.self_attn.qkv.bias",
        "blip.visual_encoder.blocks.3.attn.proj.weight": "vision.encoder.layers.3.self_attn.projection.weight",
        "blip.visual_encoder.blocks.0.norm2.weight": "vision.encoder.layers.0.layer_norm2.weight",
        "blip.visual_encoder.blocks.0.mlp.fc1.bias": "vision.encoder.layers.0.mlp.fc1.bias",
        "blip.visual_encoder.norm.bias": "vision.post_layernorm.bias",
        "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight": (
            "text.encoder.layer.1.crossattention.self.key.weight"
        ),
        "mlp.layers.7.bias": "mlp.7.bias",
    }
    for official, ours in pairs.items():
        assert _official_to_model_key(official) == ours
        assert _model_to_official_key(ours) == official
    assert _official_to_model_key("blip.itm_head.weight") is None


def test_imagereward_round_trip_and_formula(imagereward_files, tmp_path):
    from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize, ToTensor

    from moss_eval.quality.preference import (
        CLIP_MEAN,
        CLIP_STD,
        IMAGEREWARD_MEAN,
        IMAGEREWARD_STD,
        ImageRewardEvaluator,
    )

    model, official, checkpoint, tokenizer_dir = imagereward_files
    images = random_images(3, 40, 56, seed=3)
    records = write_run(tmp_path / "run", images, PROMPTS)
    ev = ImageRewardEvaluator(
        checkpoint=str(checkpoint),
        tokenizer=str(tokenizer_dir),
        vision_config=TINY_VISION,
        text_config=TINY_TEXT,
    )
    result = ev.evaluate(EvalInput(run_dir=tmp_path / "run", records=records, batch_size=2))

    # Round trip: every tensor of the loaded model is the one the official-format file holds.
    loaded, tokenizer, _ = ev.load()
    own = loaded.state_dict()
    assert len(own) == len(official) - len(UNUSED)
    for key, value in model.state_dict().items():
        assert torch.equal(own[key], value), key
    assert result.info["unused_checkpoint_keys"] == sorted(UNUSED)

    # The score by hand: BLIP's transform, the text [CLS] state over the image tokens, the MLP, mean/std.
    from PIL import Image

    resize, crop = Resize(32, interpolation=InterpolationMode.BICUBIC), CenterCrop(32)
    normalize = Normalize(CLIP_MEAN, CLIP_STD)
    pixels = torch.stack([normalize(ToTensor()(crop(resize(Image.fromarray(im))))) for im in images])
    text = tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert text["input_ids"].shape == (3, 35)
    with torch.no_grad():
        image_embeds = model.vision(pixel_values=pixels).last_hidden_state
        assert image_embeds.shape == (3, 1 + 2 * 2, 32)  # [CLS] + 2×2 patches
        hidden = model.text(
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long),
        ).last_hidden_state
        want = (model.mlp(hidden[:, 0]).squeeze(-1) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
    got = [result.per_image[r["id"]]["imagereward"] for r in records]
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert result.scores["imagereward_mean"] == pytest.approx(want.mean().item(), abs=1e-5)
    # the image matters: another image gives another score
    assert len({round(v, 6) for v in got}) == 3


def test_imagereward_vision_tower_is_blips_vit(imagereward_files):
    """The HF vision tower under the mapped names computes BLIP's timm-style ViT, written out from the official
    keys: patch conv, [CLS] + positions, pre-norm blocks (LayerNorm ε 1e-6, fused qkv, exact GELU), final norm."""
    import torch.nn.functional as F

    model, official, _, _ = imagereward_files
    w = {k.removeprefix("blip.visual_encoder."): v for k, v in official.items() if "visual_encoder" in k}
    x = torch.rand(2, 3, 32, 32)
    h = (
        F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=16)
        .flatten(2)
        .transpose(1, 2)
    )
    h = torch.cat([w["cls_token"].expand(2, -1, -1), h], dim=1) + w["pos_embed"]
    heads, width = 2, 32
    for i in range(2):
        p = f"blocks.{i}."
        y = F.layer_norm(h, (width,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).reshape(
            2, -1, 3, heads, width // heads
        )
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(2, -1, width)
        h = h + F.linear(y, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        y = F.layer_norm(h, (width,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), *_fc(w, p + "mlp.fc2")
        )
        h = h + y
    want = F.layer_norm(h, (width,), w["norm.weight"], w["norm.bias"], eps=1e-6)
    with torch.no_grad():
        got = model.vision(pixel_values=x).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _fc(w, prefix):
    return w[prefix + ".weight"], w[prefix + ".bias"]


def test_imagereward_strict_key_check_names_keys(imagereward_files):
    from moss_eval.quality.preference import (
        ImageRewardModel,
        imagereward_text_config,
        imagereward_vision_config,
        load_imagereward_state_dict,
    )

    _, official, _, _ = imagereward_files
    fresh = ImageRewardModel(imagereward_vision_config(**TINY_VISION), imagereward_text_config(**TINY_TEXT))
    missing = {k: v for k, v in official.items() if k != "blip.visual_encoder.blocks.1.attn.qkv.weight"}
    with pytest.raises(
        ValueError, match=r"1 key\(s\) missing: blip\.visual_encoder\.blocks\.1\.attn\.qkv\.weight"
    ):
        load_imagereward_state_dict(fresh, missing)
    extra = {**official, "blip.itm_head.weight": torch.zeros(2, 32)}
    with pytest.raises(ValueError, match=r"no place in the model: blip\.itm_head\.weight"):
        load_imagereward_state_dict(fresh, extra)
    deeper = {**official, "blip.visual_encoder.blocks.5.norm1.weight": torch.zeros(32)}
    with pytest.raises(
        ValueError, match=r"beyond this architecture: blip\.visual_encoder\.blocks\.5\.norm1\.weight"
    ):
        load_imagereward_state_dict(fresh, deeper)
    wrong = {**official, "mlp.layers.7.bias": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"wrong shape: mlp\.layers\.7\.bias \(2,\)≠\(1,\)"):
        load_imagereward_state_dict(fresh, wrong)


# ================================================================================================ FID


class ChannelStats(torch.nn.Module):
    """A 6-d feature: per-channel mean and standard deviation of a uint8 image (what a test can redo by hand)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T


def fid_by_hand(f1: torch.Tensor, f2: torch.Tensor) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    r1 = _sqrtm_psd(s1)
    # tr sqrt(S1 S2) = tr sqrt(S1^½ S2 S1^½), the symmetric form
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * _sqrtm_psd(r1 @ s2 @ r1).trace())


def test_fid_through_torchmetrics_equals_closed_form(tmp_path, caplog):
    from PIL import Image

    from moss_eval.quality.distribution import FIDEvaluator

    reference = tmp_path / "reference"
    (reference / "sub").mkdir(parents=True)
    ref_images = random_images(8, 16, 16, seed=5) + random_images(2, 24, 20, seed=6)
    for i, im in enumerate(ref_images):
        Image.fromarray(im).save(reference / ("sub" if i % 2 else ".") / f"{i}.png")
    (reference / "notes.txt").write_text("not an image")
    run_images = [(im // 2 + 60).astype("uint8") for im in random_images(5, 16, 16, seed=7)]
    records = write_run(tmp_path / "run", run_images, PROMPTS + PROMPTS[:2])

    ev = FIDEvaluator(reference_images=str(reference), feature_extractor=ChannelStats(), batch_size=3)
    with caplog.at_level(logging.WARNING):
        result = ev.evaluate(EvalInput(run_dir=tmp_path / "run", records=records))

    as_chw = lambda ims: torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im in ims])  # noqa: E731
    f_ref = torch.cat([ChannelStats()(as_chw(ref_images[:8])), ChannelStats()(as_chw(ref_images[8:]))])
    f_run = ChannelStats()(as_chw(run_images))
    assert result.scores["fid"] == pytest.approx(fid_by_hand(f_run, f_ref), rel=1e-6, abs=1e-9)
    assert result.scores["fid"] > 0.01  # the two sets differ (halved contrast)
    assert result.scores["reference_images"] == 10 and result.scores["images"] == 5
    assert result.info["feature_dims"] == 6
    assert any("5 generated images for 6-d features" in w for w in result.info["warnings"])
    assert "ill-conditioned" in caplog.text


def test_inception_loads_from_a_local_file(tmp_path, monkeypatch):
    from torchmetrics.image.fid import NoTrainInceptionV3

    from moss_eval.quality.distribution import load_inception

    # A random InceptionV3 in torch-fidelity's format: build the network with its weight loading switched off.
    with monkeypatch.context() as patch:
        patch.setattr(NoTrainInceptionV3, "load_state_dict", lambda self, state, *a, **k: None)
        import io

        empty = io.BytesIO()
        torch.save({}, empty)
        empty.seek(0)
        torch.manual_seed(0)
        random_net = NoTrainInceptionV3(
            "inception-v3-compat", ["64"], feature_extractor_weights_path=empty, antialias=False
        )
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_net.state_dict(), path)
    net = load_inception(path, feature_dims=64)
    assert net.num_features == 64
    x = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), random_net(x))
    with pytest.raises(ValueError, match="feature_dims=100"):
        load_inception(path, feature_dims=100)


# ================================================================================================ CLIP score


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1)
    text.update(
        num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1
    )
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    vision.update(image_size=32, patch_size=16)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


class TensorFeatures(torch.nn.Module):
    """transformers 5's CLIPModel returns model outputs from get_*_features; torchmetrics 1.9 expects tensors."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.config = clip, clip.config

    def get_image_features(self, pixel_values):
        return self.clip.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask):
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def test_clip_score_equals_torchmetrics(clip_folder, tmp_path):
    from torchmetrics.multimodal.clip_score import CLIPScore

    from moss_eval.quality.distribution import CLIPScoreEvaluator, load_clip

    images = random_images(3, 36, 44, seed=9)
    records = write_run(tmp_path / "run", images, PROMPTS)
    result = CLIPScoreEvaluator(model=str(clip_folder), batch_size=2).evaluate(
        EvalInput(run_dir=tmp_path / "run", records=records)
    )

    model, processor = load_clip(clip_folder)
    metric = CLIPScore(model_name_or_path=lambda: (TensorFeatures(model), processor))
    chw = [torch.from_numpy(im).permute(2, 0, 1) for im in images]
    for record, image, prompt in zip(records, chw, PROMPTS, strict=True):
        entry = result.per_image[record["id"]]
        assert entry["clip_score"] == pytest.approx(float(metric(image[None], [prompt])), abs=1e-4)
        assert entry["clip_score"] == pytest.approx(max(100 * entry["cosine"], 0.0), abs=1e-9)
    metric.reset()
    metric.update(torch.stack(chw), PROMPTS)
    assert result.scores["clip_score"] == pytest.approx(float(metric.compute()), abs=1e-4)
    assert not math.isclose(result.per_image["00000"]["cosine"], result.per_image["00001"]["cosine"])


# ================================================================================================ weight files


def test_weight_files_name_every_file_and_check_weights_reports_them(tmp_path):
    from moss_eval.quality.distribution import CLIPScoreEvaluator, FIDEvaluator
    from moss_eval.quality.fidelity_eval import FidelityEvaluator
    from moss_eval.quality.preference import HPSEvaluator, ImageRewardEvaluator

    gone = tmp_path / "absent"
    evaluators = [
        FidelityEvaluator(lpips_weights=str(gone / "alexnet-owt-7be5be79.pth")),
        HPSEvaluator(checkpoint=str(gone / "HPS_v2.1_compressed.pt")),
        ImageRewardEvaluator(
            checkpoint=str(gone / "ImageReward.pt"), tokenizer=str(gone / "bert-base-uncased")
        ),
        FIDEvaluator(reference_images=str(gone / "mjhq"), inception_weights=str(gone / "pt_inception.pth")),
        CLIPScoreEvaluator(model=str(gone / "clip-vit-large-patch14")),
    ]
    keys = {ev.name: [wf.key for wf in ev.weight_files()] for ev in evaluators}
    assert keys == {
        "fidelity": ["eval.fidelity.lpips_weights"],
        "hps": ["eval.hps.checkpoint"],
        "imagereward": ["eval.imagereward.checkpoint", "eval.imagereward.tokenizer"],
        "fid": ["eval.fid.reference_images", "eval.fid.inception_weights"],
        "clip_score": ["eval.clip_score.model"],
    }
    with pytest.raises(MissingWeightsError) as err:
        check_weights(evaluators)
    message = str(err.value)
    for name in (
        "alexnet-owt-7be5be79.pth",
        "HPS_v2.1_compressed.pt",
        "ImageReward.pt",
        "bert-base-uncased/vocab.txt",
    ):
        assert name in message
    assert "pt_inception.pth" in message and "clip-vit-large-patch14/model.safetensors" in message
    assert len(err.value.missing) == 7
    # LPIPS off: fidelity needs no file at all
    assert FidelityEvaluator(lpips_weights=None).weight_files() == []
    check_weights([FidelityEvaluator(lpips_weights=None)])
