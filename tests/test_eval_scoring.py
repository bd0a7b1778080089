"""Scorer rules beyond the public vectors: the spreadsheet round trip, extraction quirks, errors VLMEvalKit raises,
and judges (scripted, callables, a local OpenAI-compatible server; a failing judge is an error)."""
import math

import pandas as pd
import pytest
from hypothesis import example, given, settings, strategies as st

from bluelm_v.evaluation import (JudgeError, ScoringError, UnknownCategoryError, get_benchmark,
                                 prediction_as_scored, score, xlsx_roundtrip)
from bluelm_v.evaluation.errors import EmptyGroupError
from bluelm_v.evaluation.judges import make_judge
from bluelm_v.evaluation.matching import infer_choice
from bluelm_v.evaluation.scorers import load_all
from bluelm_v.evaluation.scorers.anls import anls_distance
from bluelm_v.evaluation.scorers.mmvet import mmvet_tables
from bluelm_v.evaluation.textnorm import normalize_vqa_answer, strip_punctuation
from eval_helpers import FakeOpenAI, prompt_text


# ---- spreadsheet round trip ---------------------------------------------------------------------------------------
def test_roundtrip_na_strings_and_cells():
    got = prediction_as_scored(["", "N/A", "NA", "null", "None", "   ", "a\rb", "x_x0041_y", "{=1+1}", "ok"])
    assert got == ["nan", "nan", "nan", "nan", "None", "   ", "a_x000D_b", "x_x0041_y", "0", "ok"]


def test_roundtrip_column_inference():
    assert prediction_as_scored(["007", "1.50", "1e3"]) == ["7.0", "1.5", "1000.0"]
    assert prediction_as_scored(["007", "12"]) == ["7", "12"]
    assert prediction_as_scored(["12", ""]) == ["12.0", "nan"]
    assert prediction_as_scored(["true", "False", ""]) == ["True", "False", "nan"]
    assert prediction_as_scored(["12", "twelve"]) == ["12", "twelve"]  # mixed column: untouched
    assert xlsx_roundtrip(["0."]) == [0.0] and xlsx_roundtrip([0.0]) == [0]  # a whole float is written as a number


def test_roundtrip_hyperlinks_and_limits():
    assert prediction_as_scored(["mailto:a@b.c", "http://x.org/a b", "text"]) == ["a@b.c", "http://x.org/a b", "text"]
    assert prediction_as_scored(["http://x.org/" + "a" * 3000, "t"]) == ["nan", "t"]  # link too long: not written
    assert len(prediction_as_scored(["y" * 40000, "t"])[0]) == 32767
    typed = xlsx_roundtrip([14, 0.6, 2.0, "B", None])  # numbers stay numbers, whole floats come back as int
    assert typed[:4] == [14, 0.6, 2, "B"] and type(typed[2]) is int and math.isnan(typed[4])


def _same_cell(a, b) -> bool:
    """Equal as the scorers would compare them: NaN with NaN, numbers by value (a whole float written to a
    spreadsheet comes back as an int: '0.' reads as 0.0, which is written as the number 0 and reads as 0)."""
    if isinstance(a, float) and math.isnan(a) or isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return str(a) == str(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6))
@example(["0."]).via("a whole float read back once comes back as an int the second time")
def test_roundtrip_is_stable(values):
    """Reading back what was read back changes no value (the evaluators load files they wrote), and from the
    second round trip on not even a type."""
    once = xlsx_roundtrip(values)
    twice = xlsx_roundtrip(once)
    assert all(_same_cell(a, b) for a, b in zip(once, twice)) and len(once) == len(twice)
    assert [str(v) for v in xlsx_roundtrip(twice)] == [str(v) for v in twice]


# ---- extraction rules ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("(C)", "C"), ("The answer is B because it is yellow.", "B"), ("the answer is b.", "B"),
    ("The answer is apple", "A"), ("b", None), ("B or C", None), ("Z", "Z"),
    ("Cannot determine the answer", "Z"), ("Failed to obtain answer via API B", None),
    ("D seems plausible but after checking the image carefully I would choose differently", None),
])
def test_infer_choice_cases(text, expected):
    assert infer_choice(text, {"A": "apple pie", "B": "banana", "C": "cherry", "D": "date"}) == expected


def test_infer_text_budget_and_ambiguity():
    assert infer_choice("cats", {"A": "cat", "B": "cats"}) is None
    assert infer_choice("nan", {"A": "B", "B": "A"}) == "B"  # the empty-prediction quirk
    assert infer_choice("x" * 20 + " dog", {"A": "dog", "B": "cow"}) is None  # longer than 2x the options


def test_vqa_normalisation_quirks():
    assert strip_punctuation("coca-cola 1,000") == "cocacola 1000"
    assert strip_punctuation("coca-cola") == "coca cola"
    assert normalize_vqa_answer("yes.") == "yes" and normalize_vqa_answer("2.") == "2."
    assert normalize_vqa_answer("Im") == "im"  # capitalised table keys never fire
    assert normalize_vqa_answer("a " * 40 + "." * 40).count(".") == 8  # only 32 periods go


def test_anls_distance_raw_denominator():
    assert anls_distance("ß", "ss") == 1.0
    assert anls_distance("hello world", "hello worl     ") == pytest.approx(1 / 15)


# ---- errors VLMEvalKit raises ---------------------------------------------------------------------------------
def test_ocrbench_unknown_category_raises_only_on_hit():
    rows = [{"index": 1, "answer": "['x']", "category": "Made Up", "prediction": "y"}]
    assert score("OCRBench", rows).metrics["Final Score"] == 0
    rows[0]["prediction"] = "x"
    with pytest.raises(UnknownCategoryError) as info:
        score("OCRBench", rows)
    assert isinstance(info.value, KeyError) and "Made Up" in str(info.value)


def test_mmvet_empty_capability_divides_by_zero():
    with pytest.raises(ZeroDivisionError):
        mmvet_tables(["rec"], [1.0])
    with pytest.raises(EmptyGroupError):
        mmvet_tables(["rec"], [1.0])


def test_missing_columns_and_bad_records():
    with pytest.raises(ScoringError, match="prediction"):
        score("TextVQA", [{"index": 1, "answer": "['a']"}])
    with pytest.raises(TypeError):
        score("TextVQA", {"index": 1})
    with pytest.raises(ScoringError, match="string"):
        score("TextVQA", [{"index": 1, "answer": "[1, 2]", "prediction": "1"}])
    with pytest.raises(ScoringError, match="index"):
        score("MMBench", [{"index": "x1", "answer": "A", "A": "a", "B": "b", "prediction": "A"}])
    with pytest.raises(ScoringError, match="test split"):
        score("MTVQA", [{"index": 1, "answer": "a", "category": "DE", "split": "val", "prediction": "a"}])
    with pytest.raises(ValueError, match="unknown benchmark"):
        score("NoSuchBench", [])


def test_dataframe_records_and_registry():
    load_all()
    frame = pd.DataFrame({"index": [1, 2], "answer": ["['stop']*1", "['go', 'go', 'go', 'go']"],
                          "prediction": ["stop", "go"]})
    result = score("TextVQA_VAL", frame)
    assert result.per_record[0]["normalized_answers"] == ["'stop' *1"]  # not a list literal: one answer
    assert result.metrics["Overall"] == pytest.approx(50.0)
    assert get_benchmark("textvqa").name == "TextVQA_VAL"


# ---- judges -------------------------------------------------------------------------------------------------------
def test_callable_and_object_judges_for_hallusion():
    rows = [{"index": "VD_math_1_0_0_0", "question": "Is it?", "answer": "Yes", "category": "VD",
             "l2-category": "math", "prediction": "Yep"}]
    assert score("HallusionBench", rows).metrics["Overall"]["aAcc"] == 0.0
    seen = []

    def judge(prompt, temperature):
        seen.append(temperature)
        return "Unknown" if len(seen) < 3 else "Yes"

    result = score("HallusionBench", rows, judge=judge)
    assert result.metrics["Overall"]["aAcc"] == 100.0 and seen == [0.0, 0.5, 1.0]

    class VLMEvalKitStyle:
        def generate(self, prompt, temperature=0):
            return "No"

    assert score("HallusionBench", rows, judge=VLMEvalKitStyle()).per_record[0]["extracted"] == "No"


def test_mcq_judge_over_http_and_recorded():
    rows = [{"index": 1, "question": "What animal?", "A": "cat", "B": "dog", "answer": "B", "prediction": "a puppy"}]
    with FakeOpenAI(lambda body: "B") as server:
        result = score("MMStar", rows, judge=f"{server.url}#judge-model")
        assert result.per_record[0]["extracted"] == "B" and result.per_record[0]["hit"] == 1
        assert result.judge == f"openai:{server.url}#judge-model"
        sent = prompt_text(server.requests[0])
        assert "Options: There are several options: \nA. cat\nB. dog\n" in sent and "Answer: a puppy" in sent
        assert server.requests[0]["model"] == "judge-model" and server.requests[0]["temperature"] == 0.0
    assert score("MMStar", rows).per_record[0]["extracted"] == "Z"  # rule-based


def test_mmbench_judge_decides_unreadable_rotations():
    rows = [{"index": 7, "question": "q", "A": "cat", "B": "dog", "answer": "A", "category": "c", "split": "dev",
             "prediction": "a cat"},
            {"index": 1000007, "question": "q", "A": "dog", "B": "cat", "answer": "B", "category": "c",
             "split": "dev", "prediction": "kitty"}]
    assert score("MMBench", rows).metrics["dev"]["Overall"] == 0.0
    result = score("MMBench", rows, judge={1000007: "B"})
    assert result.metrics["dev"]["Overall"] == 1.0
    assert result.per_group[0]["log"].startswith("Rolling 0 Matched.\nRolling 1: Answer is B")


def test_failing_judge_is_an_error_not_a_fallback():
    rows = [{"index": 1, "question": "What animal?", "A": "cat", "B": "dog", "answer": "B", "prediction": "a puppy"}]
    with FakeOpenAI(lambda body: "B", fail_first=100) as server:
        judge = make_judge(f"{server.url}#m")
        judge.client.backoff = 0.01
        with pytest.raises(JudgeError, match="HTTP 500"):
            score("MMStar", rows, judge=judge)
    with pytest.raises(JudgeError, match="URL#model"):
        make_judge("gpt-4o-mini")


def test_scripted_judge_running_out_is_an_error():
    rows = [{"index": 1, "question": "q", "answer": "a", "category": "rec,ocr,know,gen,spat,math", "prediction": "b"}]
    with pytest.raises(JudgeError, match="ran out"):
        score("MMVet", rows, judge={1: ["x"]})
