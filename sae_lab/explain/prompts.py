"""The prompts of the explainer and the two scorers, and the parsers of their answers.

They follow EleutherAI's delphi (``delphi/explainers/default/prompts.py``, ``delphi/scorers/classifier/prompts``),
which follows Bills et al. (2023): examples with the activating tokens between ``<<`` and ``>>``, an explanation
on a line ``[EXPLANATION]: ...``; the scorers answer with a Python list of 0/1, one per example. The whole text of
each prompt is shown in ``sae_lab/explain/README.md``; ``PROMPT_VERSION`` is stored with every explanation.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Sequence

PROMPT_VERSION = "delphi-default-1"
L, R = "<<", ">>"

EXPLAIN_SYSTEM = """You are a meticulous AI researcher conducting an important investigation into patterns found in \
language. Your task is to analyze text and provide an explanation that thoroughly encapsulates possible patterns \
found in it.
Guidelines:

You will be given a list of text examples on which special words are selected and between delimiters like <<this>>. \
If a sequence of consecutive tokens all are important, the entire sequence of tokens will be contained between \
delimiters <<just like this>>.

- Try to produce a concise final description. Simply describe the text latents that are common in the examples, \
and what patterns you found.
- If the examples are uninformative, you don't need to mention them. Don't focus on giving examples of important \
tokens, but try to summarize the patterns found in the examples.
- Do not mention the marker tokens (<< >>) in your explanation.
- Do not make lists of possible explanations. Keep your explanations short and concise.
- The last line of your response must be the formatted explanation, using [EXPLANATION]:
"""

# delphi's three few-shot examples (user: examples, assistant: explanation)
EXPLAIN_SHOTS = [
    (
        "Example 1:  and he was <<over the moon>> to find\n"
        "Example 2:  we'll be laughing <<till the cows come home>>! Pro\n"
        "Example 3:  thought Scotland was boring, but really there's more <<than meets the eye>>! I'd",
        "[EXPLANATION]: Common idioms in text conveying positive sentiment.",
    ),
    (
        "Example 1:  a river is wide but the ocean is wid<<er>>. The ocean\n"
        'Example 2:  every year you get tall<<er>>," she\n'
        "Example 3:  the hole was small<<er>> but deep<<er>> than the",
        '[EXPLANATION]: The token "er" at the end of a comparative adjective describing size.',
    ),
    (
        'Example 1:  something happening inside my <<house>>", he\n'
        'Example 2:  presumably was always contained in <<a box>>", according\n'
        'Example 3:  people were coming into the <<smoking area>>".\n'
        'Example 4:  Patrick: "why are you getting in the << way?>>" Later,',
        "[EXPLANATION]: Nouns representing a distinct objects that contains something, sometimes preciding a "
        "quotation mark.",
    ),
]

DETECTION_SYSTEM = """You are an intelligent and meticulous linguistics researcher.

You will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment".

You will then be given several text examples. Your task is to determine which examples possess the latent.

For each example in turn, return 1 if the sentence is correctly labeled or 0 if the tokens are mislabeled. You must \
return your response in a valid Python list. Do not return anything else besides a Python list.
"""

FUZZING_SYSTEM = """You are an intelligent and meticulous linguistics researcher.

You will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment". You will be \
given a few examples of text that contain this latent. Portions of the sentence which strongly represent this \
latent are between tokens << and >>.

Some examples might be mislabeled. Your task is to determine if every single token within << and >> is correctly \
labeled. Consider that all provided examples could be correct, none of the examples could be correct, or a mix. An \
example is only correct if every marked token is representative of the latent

For each example in turn, return 1 if the sentence is correctly labeled or 0 if the tokens are mislabeled. You must \
return your response in a valid Python list. Do not return anything else besides a Python list.
"""

# delphi's few-shot examples of both scorers (Neuronpedia features of GPT-2 small), text made readable
DETECTION_SHOTS = [
    (
        "Words related to American football positions, specifically the tight end position.",
        [
            "Getty Images\\n\\nPatriots tight end Rob Gronkowski had his boss's",
            ' names of months used in The Lord of the Rings:\\n\\n"the',
            " Media Day 2015\\n\\nLSU defensive end Isaiah Washington (94) speaks to the",
            " shown, is generally not eligible for ads. For example, videos about recent tragedies,",
            " line, with the left side - namely tackle Byron Bell at tackle and guard Amini",
        ],
        "[1,0,0,0,1]",
    ),
    (
        'The word "guys" in the phrase "you guys".',
        [
            " enact an individual health insurance mandate?\", Pelosi's response was to dismiss both",
            " birth control access but I assure you women in Kentucky aren't laughing as they struggle",
            " du Soleil Fall Protection Program with construction requirements that do not apply to theater settings "
            "because",
            "\\n distasteful. Amidst the slime lurk bits of Schadenfre",
            ' the "I want to remind you all that 10 days ago (director Massimil',
        ],
        "[0,0,0,0,0]",
    ),
    (
        '"of" before words that start with a capital letter.',
        [
            " climate, Tomblin's Chief of Staff Charlie Lorensen said.\\n",
            " no wonderworking relics, no true Body and Blood of Christ, no true Baptism",
            "\\n\\nDeborah Sathe, Head of Talent Development and Production at Film London,",
            "\\n\\nIt has been devised by Director of Public Prosecutions (DPP)",
            " and fair investigation not even include the Director of Athletics? Finally, we believe the",
        ],
        "[1,1,1,1,1]",
    ),
]
FUZZING_SHOTS = [
    (
        "Words related to American football positions, specifically the tight end position.",
        [
            "Getty Images\\n\\nPatriots<< tight end>> Rob Gronkowski had his boss's",
            " posted You should know this<< about>> offensive line coaches: they are large, demanding<< men>>",
            " Media Day 2015\\n\\nLSU<< defensive>> end Isaiah Washington (94) speaks<< to the>>",
            '<< running backs>>," he said. .. Defensive<< end>> Carroll Phillips is improving and his injury is',
            "<< line>>, with the left side - namely<< tackle>> Byron Bell at<< tackle>> and<< guard>> Amini",
        ],
        "[1,0,0,1,1]",
    ),
    (
        'The word "guys" in the phrase "you guys".',
        [
            " if you are<< comfortable>> with it. You<< guys>> support me in many other ways already and",
            " birth control access but I assure you<< women>> in Kentucky aren't laughing as they struggle",
            "'s gig! I hope you guys<< LOVE>> her, and<< please>> be nice,",
            'American, told<< Hannity>> that "you<< guys>> are playing the race card."',
            '<< the>> "I want to<< remind>> you all that 10 days ago (director Massimil',
        ],
        "[0,0,0,0,0]",
    ),
    (
        '"of" before words that start with a capital letter.',
        [
            " climate, Tomblin's Chief<< of>> Staff Charlie Lorensen said.\\n",
            " no wonderworking relics, no true Body and Blood<< of>> Christ, no true Baptism",
            "\\n\\nDeborah Sathe, Head<< of>> Talent Development and Production at Film London,",
            "\\n\\nIt has been devised by Director<< of>> Public Prosecutions (DPP)",
            " and fair investigation not even include the Director<< of>> Athletics? Finally, we believe the",
        ],
        "[1,1,1,1,1]",
    ),
]


def token_text(token: str) -> str:
    """A token as shown in a prompt: newlines and tabs escaped, so each example stays on one line."""
    return token.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def highlight(tokens: Sequence[str], marked: Callable[[int], bool]) -> str:
    """The tokens as text, each run of consecutive marked tokens between << and >> (delphi's ``_highlight``)."""
    out, inside = [], False
    for i, tok in enumerate(tokens):
        m = marked(i)
        if m and not inside:
            out.append(L)
        elif inside and not m:
            out.append(R)
        inside = m
        out.append(token_text(tok))
    return "".join(out) + (R if inside else "")


def numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(texts))


def explain_messages(examples: Sequence[str]) -> list[dict]:
    """The explainer's chat: system, delphi's three few-shot pairs, then the feature's marked examples."""
    msgs = [{"role": "system", "content": EXPLAIN_SYSTEM}]
    for user, answer in EXPLAIN_SHOTS:
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return [*msgs, {"role": "user", "content": numbered(examples)}]


def _scorer_user(explanation: str, texts: Sequence[str]) -> str:
    body = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts))
    return f"Latent explanation: {explanation}\n\nText examples:\n\n{body}\n"


def score_messages(method: str, explanation: str, texts: Sequence[str]) -> list[dict]:
    """A detection or fuzzing scorer's chat: system, delphi's three few-shot pairs, then ``texts`` to judge."""
    system, shots = {"detection": (DETECTION_SYSTEM, DETECTION_SHOTS), "fuzzing": (FUZZING_SYSTEM, FUZZING_SHOTS)}[
        method
    ]
    msgs = [{"role": "system", "content": system}]
    for expl, shot_texts, answer in shots:
        msgs += [{"role": "user", "content": _scorer_user(expl, shot_texts)}, {"role": "assistant", "content": answer}]
    return [*msgs, {"role": "user", "content": _scorer_user(explanation, texts)}]


MAX_EXPLANATION_CHARS = 300


def parse_explanation(text: str) -> str | None:
    """The explanation in a model's answer: the text after the last ``[EXPLANATION]:``, else the answer's last
    non-empty line (small models often drop the tag); marker tokens removed. None for an empty answer."""
    found = re.findall(r"\[EXPLANATION\]\s*:?\s*(.*)", text or "")
    lines = [ln.strip() for ln in (found[-1:] if found else (text or "").splitlines()) if ln.strip()]
    if not lines:
        return None
    line = lines[-1].replace(L, "").replace(R, "").strip().strip('"').strip()
    sentences = re.split(r"(?<=[.!?])\s+", line)  # small models repeat themselves: keep each sentence once
    line = " ".join(s for i, s in enumerate(sentences) if s not in sentences[:i])
    return line[:MAX_EXPLANATION_CHARS] or None


def parse_predictions(text: str, n: int) -> list[int] | None:
    """The first Python list of ``n`` zeros and ones in a scorer's answer, else None (delphi's ``_parse``)."""
    match = re.search(r"\[.*?\]", text or "", re.DOTALL)
    if match is None:
        return None
    try:
        values = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != n or any(v not in (0, 1) or isinstance(v, float) for v in values):
        return None
    return [int(v) for v in values]
