"""Benchmarks as data: one small declaration per VLMEvalKit dataset (file, checksum, prompt, scorer).

Names are VLMEvalKit's dataset names; a family name (``MMBench``, ``AI2D``, ...) stands for its default dataset.
URLs and MD5 sums are the ones VLMEvalKit e8e78f05 downloads and checks. Nothing here is keyed on substrings of
names: each dataset says which prompt builder and which scorer it uses.
"""
from __future__ import annotations

from dataclasses import dataclass

from bluelm_v.evaluation.errors import EvaluationError

_OC = "https://opencompass.openxlab.space/utils"


@dataclass(frozen=True)
class Benchmark:
    name: str  # VLMEvalKit dataset name
    family: str
    scorer: str  # key of bluelm_v.evaluation.scorers.REGISTRY
    prompt: str  # key of bluelm_v.evaluation.prompts.BUILDERS
    url: str | None
    md5: str | None
    default_judge: str | None  # VLMEvalKit's default judge model for this dataset (None: never judged)
    has_answers: bool = True  # TEST splits scored by a server have no answers
    note: str = ""


def _b(name, family, scorer, prompt, path, md5, judge, **kw) -> Benchmark:
    return Benchmark(name, family, scorer, prompt, f"{_OC}/{path}" if path else None, md5, judge, **kw)


_MMB = "benchmarks/MMBench"
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    _b("MMBench_DEV_EN_V11", "MMBench", "mmbench_circular", "mcq", f"{_MMB}/MMBench_DEV_EN_V11.tsv",
       "30c05be8f2f347a50be25aa067248184", "gpt-4o-mini"),
    _b("MMBench_DEV_CN_V11", "MMBench", "mmbench_circular", "mcq", f"{_MMB}/MMBench_DEV_CN_V11.tsv",
       "593f9b5f6bea453d870a798b34ae4f37", "gpt-4o-mini"),
    _b("MMBench_TEST_EN_V11", "MMBench", "mmbench_circular", "mcq", f"{_MMB}/MMBench_TEST_EN_V11.tsv",
       "8d1a704e791df6f5d9fb3ef782b65365", "gpt-4o-mini", has_answers=False,
       note="answers withheld: scored by the OpenCompass server"),
    _b("MMBench_TEST_CN_V11", "MMBench", "mmbench_circular", "mcq", f"{_MMB}/MMBench_TEST_CN_V11.tsv",
       "156e6569f9547afb16603eca16e85373", "gpt-4o-mini", has_answers=False,
       note="answers withheld: scored by the OpenCompass server"),
    _b("MMBench_DEV_EN", "MMBench", "mmbench_circular", "mcq", f"{_MMB}/MMBench_DEV_EN.tsv",
       "b6caf1133a01c6bb705cf753bb527ed8", "gpt-4o-mini"),
    _b("MMBench_DEV_CN", "MMBench", "mmbench_circular", "mcq", f"{_MMB}/MMBench_DEV_CN.tsv",
       "08b8fc3324a5ed74155350f57be69fbd", "gpt-4o-mini"),
    _b("MMStar", "MMStar", "mcq", "mcq", "VLMEval/MMStar.tsv", "e1ecd2140806c1b1bbf54b43372efb9e", "gpt-4o-mini"),
    _b("AI2D_TEST", "AI2D", "mcq", "mcq", "VLMEval/AI2D_TEST.tsv", "0f593e0d1c7df9a3d69bf1f947e71975", "gpt-4o-mini"),
    _b("AI2D_TEST_NO_MASK", "AI2D", "mcq", "mcq", "VLMEval/AI2D_TEST_NO_MASK.tsv",
       "fd8f463634d4fe9fbd23b876e8eea5be", "gpt-4o-mini"),
    _b("MMMU_DEV_VAL", "MMMU", "mcq_mmmu", "mmmu", "VLMEval/MMMU_DEV_VAL.tsv", "585e8ad75e73f75dcad265dfd0417d64",
       "gpt-4o-mini"),
    _b("MMMU_TEST", "MMMU", "mcq_mmmu", "mmmu", "VLMEval/MMMU_TEST.tsv", "c19875d11a2d348d07e5eb4bdf33166d",
       "gpt-4o-mini", has_answers=False, note="answers withheld: scored by the MMMU server"),
    _b("HallusionBench", "HallusionBench", "hallusionbench", "plain", "VLMEval/HallusionBench.tsv",
       "0c23ac0dc9ef46832d7a24504f2a0c7c", "gpt-4o-mini"),
    _b("OCRBench", "OCRBench", "ocrbench", "plain", "VLMEval/OCRBench.tsv", "e953d98a987cc6e26ef717b61260b778", None),
    _b("TextVQA_VAL", "TextVQA", "vqa_accuracy", "vqa_short", "VLMEval/TextVQA_VAL.tsv",
       "b233b31f551bbf4056f2f955da3a92cd", None),
    _b("DocVQA_VAL", "DocVQA", "anls", "vqa_short", "VLMEval/DocVQA_VAL.tsv", "d5ee77e1926ff10690d469c56b73eabf", None),
    _b("DocVQA_TEST", "DocVQA", "anls", "vqa_short", "VLMEval/DocVQA_TEST.tsv", "6a2f28cac26ef2d3447374e8c6f6c8e9",
       None, has_answers=False, note="answers withheld: scored by the DocVQA (RRC) server"),
    _b("InfoVQA_VAL", "InfoVQA", "anls", "vqa_short", "VLMEval/InfoVQA_VAL.tsv", "2342e9c225222f0ef4dec545ebb126fe",
       None),
    _b("MTVQA_TEST", "MTVQA", "mtvqa", "mtvqa", "VLMEval/MTVQA_TEST.tsv", "d87c17dbab934b7cd89c0a3c1c5657f4", None),
    _b("MathVista_MINI", "MathVista", "mathvista", "plain", "VLMEval/MathVista_MINI.tsv",
       "f199b98e178e5a2a20e7048f5dcb0464", "gpt-4o-mini"),
    _b("MMVet", "MMVet", "mmvet", "plain", "VLMEval/MMVet.tsv", "748aa6d4aa9d4de798306a63718455e3", "gpt-4-turbo"),
)}

FAMILY_DEFAULT = {
    "MMBench": "MMBench_DEV_EN_V11", "MMStar": "MMStar", "AI2D": "AI2D_TEST", "MMMU": "MMMU_DEV_VAL",
    "HallusionBench": "HallusionBench", "OCRBench": "OCRBench", "TextVQA": "TextVQA_VAL", "DocVQA": "DocVQA_VAL",
    "InfoVQA": "InfoVQA_VAL", "MTVQA": "MTVQA_TEST", "MathVista": "MathVista_MINI", "MMVet": "MMVet",
}


def get_benchmark(name: str) -> Benchmark:
    """A dataset name or a family name (exact, else case-insensitive)."""
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if name in FAMILY_DEFAULT:
        return BENCHMARKS[FAMILY_DEFAULT[name]]
    lowered = {k.lower(): k for k in [*BENCHMARKS, *FAMILY_DEFAULT]}
    if name.lower() in lowered:
        return get_benchmark(lowered[name.lower()])
    raise EvaluationError(f"unknown benchmark {name!r}; datasets: {', '.join(BENCHMARKS)}; "
                          f"families: {', '.join(FAMILY_DEFAULT)}")


__all__ = ["BENCHMARKS", "Benchmark", "FAMILY_DEFAULT", "get_benchmark"]
