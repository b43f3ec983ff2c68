"""The T5 text path: a tiny T5 encoder and tokenizer built here, saved with save_pretrained and loaded back through
the same code that loads flan-t5-xl (local folder, no hub)."""

import pytest
import torch

from moss_models.infinity import T5TextEncoder, TextBatch, random_infinity

WORDS = ["a", "red", "cat", "two", "dogs", "on", "grass", "photo", "of", "blue", "sky"]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    # A SentencePiece-style unigram vocabulary (what flan-t5-xl's tokenizer is), 3 special tokens first.
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=256,
        d_kv=32,
        d_ff=512,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = T5EncoderModel(config).eval()
    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder, model


def test_encode_packs_valid_tokens_like_the_release(t5_folder):
    folder, reference = t5_folder
    encoder = T5TextEncoder(folder, max_length=16)
    batch = encoder.encode(["a red cat", "two dogs on grass"])
    assert batch.lens == [4, 5]  # words + </s>
    assert batch.cu_seqlens.tolist() == [0, 4, 9]
    assert batch.kv_compact.shape == (9, 256) and batch.kv_compact.dtype == torch.float32
    # the packed rows are the encoder's outputs for the valid (unpadded) positions
    ids = torch.tensor([[3 + WORDS.index(w) for w in ["a", "red", "cat"]] + [1] + [0] * 12])
    with torch.no_grad():
        full = reference(
            input_ids=ids, attention_mask=(ids != 0).long() | (torch.arange(16) < 4).long()[None]
        )
    torch.testing.assert_close(batch.select(0), full.last_hidden_state[0, :4], rtol=1e-5, atol=1e-5)


def test_prompts_longer_than_max_length_are_truncated(t5_folder):
    folder, _ = t5_folder
    batch = T5TextEncoder(folder, max_length=16).encode([" ".join(WORDS * 3)])
    assert batch.lens == [16]


def test_end_to_end_generation_from_prompts(t5_folder):
    folder, _ = t5_folder
    gen = random_infinity("infinity_tiny", seed=0, text_encoder=T5TextEncoder(folder, max_length=16))
    out = gen.generate(["a red cat", "blue sky"], [1, 2], resolution=256)
    assert out.images.shape == (2, 256, 256, 3)
    again = gen.generate(["a red cat"], [1], resolution=256)
    assert torch.equal(again.images[0], out.images[0])


def test_bad_prompts_and_folder(t5_folder, tmp_path):
    folder, _ = t5_folder
    with pytest.raises(ValueError, match="prompts must be a non-empty list of strings"):
        T5TextEncoder(folder).encode([])
    with pytest.raises(FileNotFoundError, match="expected a flan-t5-xl folder"):
        T5TextEncoder(tmp_path / "nope")


def test_text_batch_cfg_rows():
    batch = TextBatch.from_features([torch.ones(2, 4), 2 * torch.ones(3, 4)])
    uncond = torch.arange(16 * 4, dtype=torch.float32).view(16, 4)
    full = batch.with_unconditional(uncond)
    assert full.lens == [2, 3, 2, 3]
    assert full.cu_seqlens.tolist() == [0, 2, 5, 7, 10]
    assert torch.equal(full.kv_compact[5:7], uncond[:2]) and torch.equal(full.kv_compact[7:10], uncond[:3])
