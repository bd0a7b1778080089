"""Prompt builders as VLMEvalKit's datasets build them (``build_prompt`` in ``vlmeval/dataset/image_*.py``), each
with a version string.

A message is VLMEvalKit's list of ``{"type": "image" | "text", "value": ...}`` parts. Builders take a row (a
dict of dataset fields) and the row's images (paths, bytes, arrays or placeholders, in dataset order) and return
the message. Bump a builder's version whenever its output can change; run results record it.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from bluelm_v.evaluation.errors import DataError
from bluelm_v.evaluation.roundtrip import as_scored_text, is_missing

VQA_SUFFIX = "\nAnswer the question using a single word or phrase."
MTVQA_SUFFIX = "\nAnswer the question using a word or phrase in the language of the question."
MCQ_SUFFIX = "Please select the correct answer from the options above. \n"


def _image_parts(images: Sequence[Any]) -> list[dict]:
    return [{"type": "image", "value": im} for im in images]


def build_plain(row: dict, images: Sequence[Any]) -> list[dict]:
    """Every image, then the raw question (OCRBench, MathVista, MMVet, HallusionBench)."""
    return _image_parts(images) + [{"type": "text", "value": as_scored_text(row.get("question"))}]


def build_vqa_short(row: dict, images: Sequence[Any]) -> list[dict]:
    """TextVQA, DocVQA, InfoVQA: question + the single-word-or-phrase instruction."""
    msgs = build_plain(row, images)
    msgs[-1]["value"] += VQA_SUFFIX
    return msgs


def build_mtvqa(row: dict, images: Sequence[Any]) -> list[dict]:
    msgs = build_plain(row, images)
    msgs[-1]["value"] += MTVQA_SUFFIX
    return msgs


def mcq_text(row: dict) -> str:
    """Hint (if any), question, options A, B, ... (non-empty ones) and the selection sentence."""
    options = {c: row[c] for c in string.ascii_uppercase if c in row and not is_missing(row[c])}
    text = ""
    hint = row.get("hint")
    if hint is not None and not is_missing(hint):
        text += f"Hint: {hint}\n"
    text += f"Question: {as_scored_text(row.get('question'))}\n"
    if options:
        text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items()) + MCQ_SUFFIX
    return text


def build_mcq(row: dict, images: Sequence[Any]) -> list[dict]:
    return _image_parts(images) + [{"type": "text", "value": mcq_text(row)}]


def interleave_images(text: str, images: Sequence[Any]) -> list[dict] | None:
    """MMMU: split the text at ``<image k>`` (one digit k) and put image k there; None when no marker."""
    segments = text.split("<image ")
    if len(segments) == 1:
        return None
    parts = [{"type": "text", "value": segments[0]}]
    for seg in segments[1:]:
        if len(seg) < 2 or not seg[0].isdigit() or not seg[0].isascii() or seg[1] != ">":
            raise DataError(f"malformed image marker '<image {seg[:3]}' in the question")
        k = int(seg[0]) - 1  # '<image 0>' gives -1, the last image, as in VLMEvalKit
        try:
            image = images[k]
        except IndexError:
            raise DataError(f"question refers to <image {seg[0]}> but the row has {len(images)} image(s)") from None
        parts += [{"type": "image", "value": image}, {"type": "text", "value": seg[2:]}]
    return parts


def build_mmmu(row: dict, images: Sequence[Any]) -> list[dict]:
    """The MCQ prompt with images moved to their ``<image k>`` markers (unreferenced images dropped)."""
    text = mcq_text(row)
    return interleave_images(text, images) or build_mcq(row, images)


@dataclass(frozen=True)
class PromptBuilder:
    name: str
    version: str
    build: Callable[[dict, Sequence[Any]], list[dict]]
    description: str


BUILDERS = {b.name: b for b in (
    PromptBuilder("plain", "vlmevalkit-e8e78f05/1", build_plain, "images + question"),
    PromptBuilder("vqa_short", "vlmevalkit-e8e78f05/1", build_vqa_short, "images + question + single word/phrase"),
    PromptBuilder("mtvqa", "vlmevalkit-e8e78f05/1", build_mtvqa, "images + question + answer in its language"),
    PromptBuilder("mcq", "vlmevalkit-e8e78f05/1", build_mcq, "images + hint/question/options"),
    PromptBuilder("mmmu", "vlmevalkit-e8e78f05/1", build_mmmu, "MCQ text with images at <image k> markers"),
)}


def get_builder(name: str) -> PromptBuilder:
    try:
        return BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown prompt builder {name!r}; known: {', '.join(BUILDERS)}") from None


def placeholder_images(row: dict, builder: str) -> list[str]:
    """``img1.jpg, img2.jpg, ...`` stand-ins (as the vector files use): one per ``<image k>`` marker up to the
    highest k for MMMU, else one."""
    n = 1
    if builder == "mmmu":
        text = as_scored_text(row.get("question"))
        ks = [int(seg[0]) for seg in text.split("<image ")[1:] if seg[:1].isdigit() and seg[:1].isascii()]
        n = max([1, *ks])
    return [f"img{i}.jpg" for i in range(1, n + 1)]


__all__ = ["BUILDERS", "PromptBuilder", "build_mcq", "build_mmmu", "build_plain", "get_builder", "mcq_text",
           "placeholder_images"]
