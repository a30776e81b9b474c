"""The running example's prompt format, shared by every system, the fine-tuning data and the labs.

The course's running example is the support assistant of **Lumio**, a fictional company that sells
smart lamps and the Lumio app subscriptions. Every system in the course (base, RAG, fine-tuned,
hybrid) sends the model the same system prompt and the same user-message layout, so that the
measured differences come from retrieval and from training, not from different prompts.

The answer schema is one JSON object with exactly three keys, in this order::

    {"answer": "...", "sources": ["kb-..."], "needs_human": false}

``sources`` lists the ids of the context passages the answer used (empty when none);
``needs_human`` is true when the context does not contain the answer and a person must take over.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from .errors import CourseError

COMPANY = "Lumio"
SIGN_OFF = "Stay bright!"
ANSWER_KEYS = ("answer", "sources", "needs_human")

# The prompt states every rule the voice metric checks (ftrag.evaluate.voice_checks: at most 60
# words, second person, no AI talk, the sign-off), so that "fine-tuning improved the voice" is
# measured against a prompt that asked for the same thing.
SYSTEM_PROMPT = (
    f"You are the {COMPANY} support assistant. Reply with one JSON object only: "
    '{"answer": "<short friendly reply>", "sources": ["<ids of the context passages you used>"], '
    '"needs_human": <true if the context does not contain the answer, else false>}. '
    "Use only facts from the context. In the answer, speak to the customer as \"you\", use at most "
    f'60 words, never mention being an AI, and end with "{SIGN_OFF}"'
)

HANDOFF_ANSWER = (
    "I don't have that information, so I'm passing you to a teammate who can check. " + SIGN_OFF
)


# Instructions a RAG system can send instead of SYSTEM_PROMPT, for knowledge alone (no schema, no
# voice): `make sweeps-prompt` asks each the dev questions and the profile's ``rag_instruction`` is
# the one that answered most of them (ftrag.sweeps.pick_rag_instruction). "llamaindex" is
# llama-index's own default question-answering template, sent as the user turn with no system prompt.
_HANDOFF_RULE = ("If the context does not contain the answer, say: \"I don't have that information, so I'm "
                 "passing you to a teammate.\"")
INSTRUCTIONS = {
    "json": SYSTEM_PROMPT,
    "plain": (f"You are the {COMPANY} support assistant. Answer the customer's question in one short sentence, "
              f"using only facts from the context. {_HANDOFF_RULE}"),
    "quote": (f"You are the {COMPANY} support assistant. Answer the question with the exact figure or name from "
              f"the context (price, number of days, percentage), in one short sentence. {_HANDOFF_RULE}"),
    "extract": (f"You are the {COMPANY} support assistant. Reply with the one sentence from the context that "
                "answers the customer's question, copied word for word."),
    "llamaindex": None,
}


def format_context(passages: Sequence[tuple[str, str]]) -> str:
    """Render retrieved passages as ``[id] text`` lines, the layout the model learns to cite."""
    return "\n".join(f"[{doc_id}] {' '.join(text.split())}" for doc_id, text in passages)


def user_message(question: str, passages: Sequence[tuple[str, str]] | None = None) -> str:
    """The user turn: an optional ``Context:`` block of passages, then the question."""
    question = " ".join(question.split())
    if passages:
        return f"Context:\n{format_context(passages)}\n\nQuestion: {question}"
    return f"Question: {question}"


def chat(question: str, passages: Sequence[tuple[str, str]] | None = None,
         examples: Sequence[dict[str, str]] = (), instruction: str = "json") -> list[dict[str, str]]:
    """The messages (system + user) that every system sends for one question; ``examples`` are
    worked user/assistant turns placed between the two (few-shot prompting). ``instruction`` names
    the system prompt (:data:`INSTRUCTIONS`; "json", the course's answer contract, unless a RAG
    system was given another)."""
    if instruction not in INSTRUCTIONS:
        raise CourseError(f"Unknown instruction {instruction!r}: use one of {', '.join(INSTRUCTIONS)} "
                          "(ftrag.prompts.INSTRUCTIONS).")
    if instruction == "llamaindex":
        from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL

        return [*examples, {"role": "user", "content": DEFAULT_TEXT_QA_PROMPT_TMPL.format(
            context_str=format_context(passages or ()), query_str=" ".join(question.split()))}]
    return [
        {"role": "system", "content": INSTRUCTIONS[instruction]},
        *examples,
        {"role": "user", "content": user_message(question, passages)},
    ]


def answer_json(answer: str, sources: Sequence[str] = (), needs_human: bool = False) -> str:
    """Serialise a reply in the exact form the fine-tuning data teaches (compact key order)."""
    return json.dumps(
        {"answer": answer, "sources": list(sources), "needs_human": bool(needs_human)},
        ensure_ascii=False,
    )
