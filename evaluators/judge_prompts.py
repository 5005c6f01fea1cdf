"""The benchmarks' official judge prompts, as data.

AlpacaEval 2.0: the `weighted_alpaca_eval_gpt4_turbo` annotator (prompt file
`alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`): the judge sees the instruction and two
outputs labelled "m" (output_1) and "M" (output_2) and answers with one identifier, read from the
log-probabilities of its single output token (P(M) = p(M) / (p(m) + p(M))). The alpaca_eval
file writes the system and user turns in one ChatML text; here they are the two messages.

Arena-Hard: arena-hard-auto's judge system prompt (v0.1 and v2.0 `hard_prompt`, `coding`,
`math`; v2.0 `creative_writing` drops the "generate your own answer first" paragraph) and its
user template.

Templates are filled with `fill(template, **values)` (plain replacement of `{name}`), because
the AlpacaEval template contains literal braces.
"""

ALPACA_EVAL_SYSTEM_PROMPT = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model "
    "(LLMs) based on the quality of their responses to a given instruction. This process will be used "
    "to create a leaderboard reflecting the most accurate and human-preferred answers."
)

ALPACA_EVAL_USER_TEMPLATE = '''I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier'''

# The identifiers of output_1 and output_2 in the AlpacaEval template.
ALPACA_EVAL_TOKENS = ("m", "M")

_ARENA_HARD_INTRO = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user prompt displayed below. You will be given assistant A's answer and assistant "
    "B's answer. Your job is to evaluate which assistant's answer is better.\n\n"
)

_ARENA_HARD_OWN_ANSWER = (
    "Begin your evaluation by generating your own answer to the prompt. You must provide your answers "
    "before judging any answers.\n\n"
    "When evaluating the assistants' answers, compare both assistants' answers with your answer. You "
    "must identify and correct any mistakes or inaccurate information.\n\n"
)

_ARENA_HARD_COMPARE_ONLY = (
    "When evaluating the assistants' answers, compare both assistants' answers. You must identify and "
    "correct any mistakes or inaccurate information.\n\n"
)

_ARENA_HARD_CRITERIA = (
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the "
    "answer correctly responds to the prompt or follows the instructions. Note when user prompt has any "
    "ambiguity or more than one interpretation, it is more helpful and appropriate to ask for "
    "clarifications or more information from the user than providing an answer based on assumptions. "
    "Relevant means all parts of the response closely connect or are appropriate to what is being asked. "
    "Concise means the response is clear and not verbose or excessive.\n\n"
    "Then consider the creativity and novelty of the assistant's answers when needed. Finally, identify "
    "any missing important information in the assistants' answers that would be beneficial to include "
    "when responding to the user prompt.\n\n"
    "After providing your explanation, you must output only one of the following choices as your final "
    "verdict with a label:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "My final verdict is tie: [[A=B]]".'
)

ARENA_HARD_SYSTEM_PROMPT = _ARENA_HARD_INTRO + _ARENA_HARD_OWN_ANSWER + _ARENA_HARD_CRITERIA
ARENA_HARD_CREATIVE_WRITING_SYSTEM_PROMPT = _ARENA_HARD_INTRO + _ARENA_HARD_COMPARE_ONLY + _ARENA_HARD_CRITERIA

ARENA_HARD_USER_TEMPLATE = (
    "<|User Prompt|>\n{QUESTION}\n\n"
    "<|The Start of Assistant A's Answer|>\n{ANSWER_A}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{ANSWER_B}\n<|The End of Assistant B's Answer|>"
)


def arena_hard_system_prompt(category: str | None) -> str:
    """The system prompt arena-hard-auto uses for a question category."""
    if category == "creative_writing":
        return ARENA_HARD_CREATIVE_WRITING_SYSTEM_PROMPT
    return ARENA_HARD_SYSTEM_PROMPT


def fill(template: str, **values: str) -> str:
    """Replace each `{name}` in `template`; values are inserted verbatim (no format-spec parsing).

    All placeholders are replaced in one pass, so a value containing `{output_2}` (say) is not
    itself substituted.
    """
    import re

    def substitute(match: "re.Match[str]") -> str:
        name = match.group(1)
        return values[name] if name in values else match.group(0)

    return re.sub(r"\{(\w+)\}", substitute, template)
