"""Answer normalisation of the official VQA evaluation as VLMEvalKit applies it (TextVQA, HallusionBench).

``normalize_vqa_answer`` = newline/tab -> space, strip, ``strip_punctuation``, ``digits_and_articles``. Quirks kept
(VLMEvalKit's ``dataset/utils/vqa_eval.py``): the punctuation rule looks at the *input* string (a character with a
space on either side anywhere, or any digit-comma-digit, deletes instead of spacing), only the first 32 stray
periods are removed (VLMEvalKit passes ``re.UNICODE`` as the count), number words stop at ten, and the contraction
table has keys with capitals that can never match lower-cased words."""
from __future__ import annotations

import re
from functools import lru_cache

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_PUNCT_SET = frozenset(PUNCTUATION)
_DELETE_ALL = str.maketrans({p: None for p in PUNCTUATION})
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_STRAY_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_PERIOD_COUNT = int(re.UNICODE)  # 32: the count VLMEvalKit passes by mistake

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})

# The official VQA contraction table (missing-apostrophe form -> canonical form), as VLMEvalKit ships it.
CONTRACTIONS = dict(item.split("=") for item in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've couldnt've=couldn't've
didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't
havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's Id've=I'd've
I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am
mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at
shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've somethingll=something'll
thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's
theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's
whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've
who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't
wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
""".split())


def strip_punctuation(text: str) -> str:
    """VQA punctuation pass: delete or space out the listed characters, then drop stray periods."""
    present = _PUNCT_SET.intersection(text)
    out = text
    if present:
        if _DIGIT_COMMA_DIGIT.search(text):
            out = out.translate(_DELETE_ALL)
        else:
            for p in present:
                # Decided on the original text, not on the partly processed one.
                out = out.replace(p, "" if (p + " " in text or " " + p in text) else " ")
    if "." in out:
        out = _STRAY_PERIOD.sub("", out, _PERIOD_COUNT)
    return out


def digits_and_articles(text: str) -> str:
    """Lower-case, number words -> digits (up to ten), drop a/an/the, restore contractions, single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


@lru_cache(maxsize=1 << 18)
def normalize_vqa_answer(text: str) -> str:
    """The full VQA answer normalisation (prediction and every gold answer go through it)."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_and_articles(strip_punctuation(text))


@lru_cache(maxsize=1 << 16)
def yes_no_extract(prediction: str) -> str:
    """HallusionBench's rule: 'Yes' if the word yes occurs and no does not, 'No' for the reverse, else 'Unknown'
    (lower-case, punctuation pass, whitespace split; ':' '*' and quotes stay attached)."""
    words = strip_punctuation(prediction.lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "Yes"
    if has_no and not has_yes:
        return "No"
    return "Unknown"


__all__ = ["digits_and_articles", "normalize_vqa_answer", "strip_punctuation", "yes_no_extract"]
