"""A real VQA model for DPG-Bench: any transformers vision-language model in a local folder.

The official DPG-Bench scorer is mPLUG-large (``damo/mplug_visual-question-answering_coco_large_en``) through
**modelscope**'s pipeline; it has no transformers port, so moss cannot load it, and numbers made with another VQA
model are **not** comparable with the paper's (or other papers') DPG-Bench scores, only with each other. Choose a
substitute that answers yes/no questions with a bare ``yes`` / ``no``:

* ``BlipForQuestionAnswering`` (``Salesforce/blip-vqa-capfilt-large`` or ``blip-vqa-base``): closest in kind to
  mPLUG (a VQAv2-finetuned encoder-decoder answering one word), small and fast; the default of
  ``conf/eval/dpg.yaml``;
* a chat model through ``AutoModelForImageTextToText`` + ``AutoProcessor`` (Qwen2-VL / Qwen2.5-VL, LLaVA style):
  stronger, slower; each question is sent as one user turn (the image, then the question followed by
  :data:`YES_NO_SUFFIX`) with the processor's chat template, and only the generated tokens are decoded.

The class is chosen from the folder's ``config.json``: ``architectures`` naming ``BlipForQuestionAnswering`` picks
BLIP VQA, anything else goes through ``AutoModelForImageTextToText``. Answers are normalised by
:func:`normalize_answer` (``"Yes, there is."`` -> ``"yes"``) so that the official exact-``"yes"`` rule applies to
chat models too; BLIP's and mPLUG's bare lowercase words are unchanged by it.

Tested: the BLIP VQA path, on a tiny random ``BlipForQuestionAnswering`` saved with a ``BlipProcessor`` (unit test).
The generic path is written against the transformers 5 processor / chat-template API and is not covered by a
test here (no tiny chat VLM with a chat template can be built offline in the test budget); check it once on the
real model before a long run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "BLIP_VQA_ARCHITECTURE",
    "YES_NO_SUFFIX",
    "TransformersVQA",
    "normalize_answer",
    "vqa_architecture",
]

BLIP_VQA_ARCHITECTURE = "BlipForQuestionAnswering"
# Appended to each question for chat models, which otherwise answer in sentences.
YES_NO_SUFFIX = " Answer with yes or no."
_FIRST_WORD = re.compile(r"[a-z]+")


def normalize_answer(text: str) -> str:
    """Lowercase and strip; when the first word is ``yes`` or ``no``, just that word (chat models add sentences)."""
    text = text.strip().lower()
    m = _FIRST_WORD.match(text.lstrip("\"'*([ "))
    if m and m.group(0) in ("yes", "no"):
        return m.group(0)
    return text


def vqa_architecture(path: str | Path) -> str:
    """The model class a VQA folder is loaded with: :data:`BLIP_VQA_ARCHITECTURE` or ``"image-text-to-text"``."""
    config_file = Path(path).expanduser() / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"eval.dpg.vqa={path}: {config_file} does not exist; the VQA model must be a local transformers "
            "folder (config.json, weights, processor files)"
        )
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    return BLIP_VQA_ARCHITECTURE if BLIP_VQA_ARCHITECTURE in architectures else "image-text-to-text"


def _resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


class TransformersVQA:
    """A transformers VQA model read from the local folder ``path`` (module docstring: which classes, tested what).

    ``answer(images, questions)`` answers ``questions[i]`` about ``images[i]`` in one batch and returns the
    normalised answers. ``dtype``: ``"auto"`` is float16 on CUDA (the official script runs mPLUG under fp16
    autocast) and float32 elsewhere; or ``"float32"`` / ``"float16"`` / ``"bfloat16"``.
    """

    def __init__(
        self,
        path: str | Path,
        device: str | None = None,
        max_new_tokens: int = 8,
        dtype: str = "auto",
        question_suffix: str = YES_NO_SUFFIX,
    ):
        import torch

        self.path = Path(path).expanduser()
        self.architecture = vqa_architecture(self.path)
        self.device = _resolve_device(device)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"eval.dpg max_new_tokens={max_new_tokens!r}: must be a positive integer")
        self.max_new_tokens = max_new_tokens
        self.question_suffix = question_suffix
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype == "auto":
            self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        elif dtype in dtypes:
            self.dtype = dtypes[dtype]
        else:
            raise ValueError(f"eval.dpg dtype={dtype!r}: allowed are auto, {', '.join(dtypes)}")

        if self.architecture == BLIP_VQA_ARCHITECTURE:
            from transformers import BlipForQuestionAnswering, BlipProcessor

            self.processor = BlipProcessor.from_pretrained(self.path, local_files_only=True)
            model_cls: Any = BlipForQuestionAnswering
        else:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
            tokenizer = getattr(self.processor, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.padding_side = (
                    "left"  # decoder-only generation continues after the last prompt token
                )
            model_cls = AutoModelForImageTextToText
        self.model = model_cls.from_pretrained(self.path, local_files_only=True, dtype=self.dtype)
        self.model.to(self.device).eval()

    def __repr__(self) -> str:
        return (
            f"TransformersVQA({str(self.path)!r}, architecture={self.architecture}, device={self.device!r})"
        )

    def describe(self) -> dict[str, Any]:
        """What the result's ``info`` records about the model."""
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "class": type(self.model).__name__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_new_tokens": self.max_new_tokens,
            "question_suffix": None if self.architecture == BLIP_VQA_ARCHITECTURE else self.question_suffix,
        }

    def _inputs(self, images: list[Image], questions: list[str]):
        if self.architecture == BLIP_VQA_ARCHITECTURE:
            return self.processor(images=images, text=questions, padding=True, return_tensors="pt")
        texts = [
            self.processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": q + self.question_suffix}],
                    }
                ],
                add_generation_prompt=True,
            )
            for q in questions
        ]
        return self.processor(images=images, text=texts, padding=True, return_tensors="pt")

    def answer(self, images: list[Image], questions: list[str]) -> list[str]:
        """Answer ``questions[i]`` about ``images[i]`` (greedy decoding); the normalised answers."""
        import torch

        if len(images) != len(questions):
            raise ValueError(
                f"answer: {len(images)} images but {len(questions)} questions; they pair up one to one"
            )
        if not questions:
            return []
        inputs = self._inputs(list(images), list(questions)).to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if self.architecture != BLIP_VQA_ARCHITECTURE:
            out = out[:, inputs["input_ids"].shape[1] :]  # the generated tokens only
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [normalize_answer(t) for t in texts]
