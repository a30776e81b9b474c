"""The decision helper: RAG, fine-tuning, both, or better prompting first?

The rules are written once, as a small decision tree (:data:`TREE`). :func:`decide` walks it for
one project and :func:`flowchart` draws the very same tree, so the picture in the book cannot
drift away from the code.

The tree asks four yes/no questions, in this order:

1. **Knowledge gap?** The model lacks facts it must use (or answers must cite sources, which only
   retrieved documents can provide).
2. **Behaviour gap?** The model knows enough but does not act as required: a strict format, a
   voice, a narrow task done reliably.
3. **Prompting tried?** A careful system prompt with few-shot examples was tried and measured.
4. **Labelled pairs?** There are enough good input/output examples to train on.

Knowledge gaps always go to retrieval. A behaviour gap goes to fine-tuning only once prompting has
been measured and found short *and* there is data to train on; until then the answer is
"prompting first" (or "rag" when there is also a knowledge gap). Both gaps with both conditions
met give "hybrid". The other inputs (how often knowledge changes, request volume) do not change
the branch; they add reasons and warnings.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Literal, Union

from .errors import CourseError

Approach = Literal["rag", "fine-tune", "hybrid", "prompting first"]
APPROACHES: tuple[str, ...] = ("rag", "fine-tune", "hybrid", "prompting first")
PROBLEMS: tuple[str, ...] = ("knowledge", "behaviour", "both", "neither")
_SPELLINGS = {"behavior": "behaviour"}


@dataclass(frozen=True)
class Recommendation:
    """What :func:`decide` recommends, and why."""

    approach: Approach
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    #: The questions asked on the way through the tree, as ``(question key, answer)`` pairs.
    path: tuple[tuple[str, bool], ...] = ()

    def __str__(self) -> str:
        lines = [f"Recommendation: {self.approach}"]
        lines += [f"  because {r}" for r in self.reasons]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the rules as data


@dataclass(frozen=True)
class Leaf:
    approach: Approach
    reason: str
    #: What to do next, printed under the approach in the flowchart.
    next_step: str = ""


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    yes: "Node"
    no: "Node"
    yes_reason: str = ""
    no_reason: str = ""


Node = Union[Question, Leaf]

QUESTION_TEXT = {
    "knowledge_gap": "Does the model lack facts it must use, or must answers cite sources?",
    "behaviour_gap": "Does the model fail to act as required (format, voice, narrow task)?",
    "prompting_tried": "Have a careful prompt and few-shot examples been tried and measured?",
    "has_labelled_data": "Are there enough good input/output pairs to train on?",
}


def _behaviour_branch(*, with_knowledge: bool) -> Question:
    """The part of the tree below 'behaviour gap = yes' (same shape with or without knowledge)."""
    ready = Leaf("hybrid", "retrieval supplies the facts and a fine-tuned model holds the "
                 "behaviour that prompting could not", "fine-tuned model + retrieval") \
        if with_knowledge else \
        Leaf("fine-tune", "the gap is behaviour, prompting has hit its ceiling and there are "
             "examples to learn the pattern from", "LoRA / QLoRA on the pairs")
    not_ready = "rag" if with_knowledge else "prompting first"
    return Question(
        "prompting_tried", QUESTION_TEXT["prompting_tried"],
        yes=Question(
            "has_labelled_data", QUESTION_TEXT["has_labelled_data"],
            yes=ready,
            no=Leaf(not_ready, "fine-tuning is supervised learning: without good input/output "
                    "pairs it has nothing to learn from, so keep the behaviour in the prompt",
                    "behaviour stays in the prompt; collect pairs"),
            yes_reason="there are labelled pairs to learn the behaviour from",
            no_reason="there are no labelled pairs yet",
        ),
        no=Leaf(not_ready, "a careful prompt with a few examples often fixes format and tone; "
                "measure it before paying for training", "write the prompt, then measure"),
        yes_reason="prompting was tried and measured and still falls short",
        no_reason="prompting has not been tried and measured yet",
    )


#: The decision tree, root first. :func:`decide` and :func:`flowchart` both read it.
TREE: Question = Question(
    "knowledge_gap", QUESTION_TEXT["knowledge_gap"],
    yes=Question(
        "behaviour_gap", QUESTION_TEXT["behaviour_gap"],
        yes=_behaviour_branch(with_knowledge=True),
        no=Leaf("rag", "the gap is knowledge: retrieve it at request time and keep the model "
                "as it is", "index the documents"),
        yes_reason="the model must also behave differently",
        no_reason="the behaviour is already fine",
    ),
    no=Question(
        "behaviour_gap", QUESTION_TEXT["behaviour_gap"],
        yes=_behaviour_branch(with_knowledge=False),
        no=Leaf("prompting first", "there is neither a knowledge nor a behaviour gap: a clear "
                "prompt on the base model is the whole solution", "the base model is enough"),
        yes_reason="the gap is how the model acts",
        no_reason="the behaviour is already fine",
    ),
    yes_reason="the model lacks knowledge it must use (or answers must cite sources)",
    no_reason="the model does not need knowledge it lacks",
)


# --------------------------------------------------------------------------- decide


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise CourseError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    return value


def decide(*, problem: str, knowledge_changes_often: bool, needs_citations: bool,
           has_labelled_data: bool, needs_strict_format_or_voice: bool,
           prompting_tried: bool = False, high_volume: bool = False,
           schema_only: bool = False) -> Recommendation:
    """Recommend ``"rag"``, ``"fine-tune"``, ``"hybrid"`` or ``"prompting first"`` for one project.

    Parameters
    ----------
    problem
        What fails today: ``"knowledge"`` (the model does not know something), ``"behaviour"``
        (it does not act as needed), ``"both"``, or ``"neither"`` (no failure identified yet).
        ``"behavior"`` is accepted too.
    knowledge_changes_often
        The facts the answers depend on change weekly or faster (prices, policies, catalogues).
    needs_citations
        Every answer must point to its source. Only retrieval can do that, so this counts as a
        knowledge gap even if ``problem`` says "behaviour".
    has_labelled_data
        Hundreds or more good input/output pairs exist (or can be written and reviewed).
    needs_strict_format_or_voice
        Outputs must follow a strict schema or a brand voice every time. This counts as a
        behaviour gap even if ``problem`` says "knowledge".
    prompting_tried
        A careful system prompt with few-shot examples has been tried *and measured*.
    high_volume
        Many requests per day, so per-request tokens dominate the bill.
    schema_only
        The behaviour required is only a machine-readable format (a JSON schema), not a voice or
        a decision such as when to hand off. Constrained decoding can enforce that without any
        training data (lab 3, "What prompting buys, and what it costs", measures it).
    """
    if not isinstance(problem, str):
        raise CourseError(f"problem must be one of {PROBLEMS}, got {problem!r}.")
    problem = _SPELLINGS.get(problem.strip().lower(), problem.strip().lower())
    if problem not in PROBLEMS:
        raise CourseError(f"problem must be one of {PROBLEMS}, got {problem!r}.")
    flags = {
        "knowledge_changes_often": knowledge_changes_often,
        "needs_citations": needs_citations,
        "has_labelled_data": has_labelled_data,
        "needs_strict_format_or_voice": needs_strict_format_or_voice,
        "prompting_tried": prompting_tried,
        "high_volume": high_volume,
        "schema_only": schema_only,
    }
    for name, value in flags.items():
        _check_bool(name, value)

    answers = {
        "knowledge_gap": problem in ("knowledge", "both") or needs_citations,
        "behaviour_gap": problem in ("behaviour", "both") or needs_strict_format_or_voice,
        "prompting_tried": prompting_tried,
        "has_labelled_data": has_labelled_data,
    }

    reasons: list[str] = []
    path: list[tuple[str, bool]] = []
    node: Node = TREE
    while isinstance(node, Question):
        answer = answers[node.key]
        path.append((node.key, answer))
        reason = node.yes_reason if answer else node.no_reason
        if reason:
            reasons.append(reason)
        node = node.yes if answer else node.no
    approach = node.approach
    reasons.append(node.reason)

    if high_volume and approach in ("fine-tune", "hybrid"):
        reasons.append("at high volume, a trained-in behaviour lets you drop instructions and "
                       "examples from every prompt, which lowers the per-request cost")
    warnings = _warnings(approach, problem, answers, flags)
    if needs_citations and problem == "behaviour":
        reasons.insert(0, "citations can only point at documents that were retrieved, "
                       "so retrieval is needed even for a behaviour problem")
    if needs_strict_format_or_voice and problem == "knowledge":
        reasons.insert(0, "a strict format or voice is a behaviour requirement on top of the "
                       "missing knowledge")
    return Recommendation(approach, tuple(reasons), tuple(warnings), tuple(path))


def _warnings(approach: str, problem: str, answers: dict[str, bool],
              flags: dict[str, bool]) -> list[str]:
    warnings: list[str] = []
    knowledge_gap, behaviour_gap = answers["knowledge_gap"], answers["behaviour_gap"]
    if knowledge_gap and flags["knowledge_changes_often"]:
        warnings.append("the facts change often: keep them in the index, never in the weights; "
                        "an update is a re-index, not a training run")
    if knowledge_gap and not flags["knowledge_changes_often"] and approach == "rag":
        warnings.append("stable knowledge could in principle be trained in, but measured "
                        "comparisons favour retrieval for facts; measure before moving it "
                        "into the weights")
    if knowledge_gap and flags["has_labelled_data"] and approach == "rag":
        warnings.append("use the labelled pairs as an evaluation set for retrieval and answers "
                        "before considering them as training data")
    if behaviour_gap and approach in ("rag", "prompting first") and not answers["has_labelled_data"]:
        warnings.append("if prompting cannot hold the behaviour, start collecting reviewed "
                        "input/output pairs now: fine-tuning needs hundreds of them")
    if behaviour_gap and flags["schema_only"]:
        warnings.append("a strict schema alone: try constrained decoding before training; it enforces "
                        "the syntax at generation time with no training data, but not a voice or the "
                        "decision to hand off, which still need a prompt or a fine-tune (for hand-offs, "
                        "also try a similarity threshold on retrieval, as lab 3's gated hybrid does)")
    if approach in ("fine-tune", "hybrid"):
        warnings.append("keep a held-out test set and compare against the prompted base model; "
                        "retrain when the behaviour spec changes")
        warnings.append("train with several seeds before trusting a behaviour: in the course's hybrid "
                        "chapter the same settings handed off on anywhere from almost none to most of the "
                        "unanswerable questions, depending on the seed alone")
    if approach == "fine-tune" and flags["knowledge_changes_often"]:
        warnings.append("you said knowledge changes often: if answers depend on those facts, "
                        "they need retrieval too, which makes this a hybrid")
    if flags["high_volume"] and knowledge_gap:
        warnings.append("at high volume the retrieved context is paid on every request: "
                        "tune top-k and chunk size, and measure prompt tokens")
    if flags["high_volume"] and behaviour_gap and approach in ("rag", "prompting first"):
        warnings.append("at high volume a long instruction block costs on every request; "
                        "a fine-tune that lets you drop it can pay for itself later")
    return warnings


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """A worked example for the decision chapter, with the approach the rules must give."""

    name: str
    description: str
    inputs: dict = field(default_factory=dict)
    expected: Approach = "rag"

    def recommendation(self) -> Recommendation:
        return decide(**self.inputs)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "Law firm: house drafting style",
        "Drafts must read like the firm's own briefs; the firm has years of approved briefs and "
        "prompting alone did not hold the style.",
        dict(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
             has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True),
        "fine-tune",
    ),
    Scenario(
        "Law firm: questions over the case database",
        "Lawyers ask about past cases; new cases arrive every week and every answer must name "
        "the case it came from.",
        dict(problem="knowledge", knowledge_changes_often=True, needs_citations=True,
             has_labelled_data=False, needs_strict_format_or_voice=False),
        "rag",
    ),
    Scenario(
        "Support bot over help-centre articles",
        "Customers ask product questions; the help centre is edited every week.",
        dict(problem="knowledge", knowledge_changes_often=True, needs_citations=True,
             has_labelled_data=False, needs_strict_format_or_voice=False, high_volume=True),
        "rag",
    ),
    Scenario(
        "Medical coding assistant",
        "Maps clinical notes to billing codes: a narrow, repetitive task over stable "
        "terminology, with many past notes already coded by experts.",
        dict(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
             has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True),
        "fine-tune",
    ),
    Scenario(
        "Strict JSON extraction",
        "Pulls fields out of invoices into a fixed JSON schema; a few-shot prompt still breaks "
        "the schema now and then; thousands of checked extractions exist.",
        dict(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
             has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True,
             high_volume=True, schema_only=True),
        "fine-tune",
    ),
    Scenario(
        "Lumio support assistant (this course)",
        "Answers from Lumio's changing help centre with sources, in a strict JSON schema and "
        "the brand voice; prompting was measured in the labs and training pairs exist.",
        dict(problem="both", knowledge_changes_often=True, needs_citations=True,
             has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True),
        "hybrid",
    ),
    Scenario(
        "Lumio in week one",
        "The same assistant before anyone has measured a prompt or written training pairs.",
        dict(problem="both", knowledge_changes_often=True, needs_citations=True,
             has_labelled_data=False, needs_strict_format_or_voice=True, prompting_tried=False),
        "rag",
    ),
    Scenario(
        "A tone, but no examples",
        "A marketing team wants replies in a warmer tone but has no labelled examples and has "
        "not tried a tone guide in the prompt.",
        dict(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
             has_labelled_data=False, needs_strict_format_or_voice=True, prompting_tried=False),
        "prompting first",
    ),
)


# --------------------------------------------------------------------------- flowchart

APPROACH_COLOURS = {
    "rag": "#cfe8ff",
    "fine-tune": "#ffe0b3",
    "hybrid": "#d9f2d0",
    "prompting first": "#eeeeee",
}


def _layout(node: Node, depth: int, next_x: list[float], pos: dict) -> float:
    """Assign x (leaf order) and depth to every node; parents sit above the middle of children."""
    if isinstance(node, Leaf):
        x = next_x[0]
        next_x[0] += 1
    else:
        x_yes = _layout(node.yes, depth + 1, next_x, pos)
        x_no = _layout(node.no, depth + 1, next_x, pos)
        x = (x_yes + x_no) / 2
    pos[id(node)] = (x, depth)
    return x


def flowchart(tree: Question = TREE, *, fontsize: float = 8):
    """Draw the decision tree that :func:`decide` walks, as a matplotlib Figure.

    Questions are white boxes, recommendations are coloured by approach; each edge is labelled
    yes/no. Rendered at build time, so the book needs no diagram service. The whole tree has eight
    recommendations side by side, too wide to read at a page's width: the book draws the two
    branches of the first question separately (``flowchart(TREE.yes)``, ``flowchart(TREE.no)``)
    with a larger ``fontsize``.
    """
    if not isinstance(tree, Question):
        raise CourseError("flowchart draws a question and what follows it; got a single recommendation.")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    pos: dict[int, tuple[float, int]] = {}
    _layout(tree, 0, [0.0], pos)
    n_leaves = sum(1 for _ in _leaves(tree))
    depth = max(d for _, d in pos.values())

    scale = fontsize / 8  # boxes grow with the text
    fig, ax = plt.subplots(figsize=(1.6 * scale * n_leaves, 1.35 * scale * (depth + 1)))
    ax.set_xlim(-0.6, n_leaves - 0.4)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")

    def xy(node):
        x, d = pos[id(node)]
        return x, -d

    def box(node):
        x, y = xy(node)
        if isinstance(node, Leaf):
            text = node.approach.upper() + "\n" + textwrap.fill(node.next_step, 18)
            face, weight, width = APPROACH_COLOURS[node.approach], "bold", 40
        else:
            text, face, weight, width = node.text, "white", "normal", 24
        wrapped = "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
        ax.text(x, y, wrapped, ha="center", va="center", fontsize=fontsize,
                fontweight=weight, zorder=3,
                bbox=dict(boxstyle="round,pad=0.4", facecolor=face, edgecolor="#555555"))

    def draw(node):
        box(node)
        if isinstance(node, Question):
            for child, label in ((node.yes, "yes"), (node.no, "no")):
                (x0, y0), (x1, y1) = xy(node), xy(child)
                ax.annotate("", xy=(x1, y1 + 0.3), xytext=(x0, y0 - 0.3),
                            arrowprops=dict(arrowstyle="->", color="#555555"), zorder=1)
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, ha="center", va="center",
                        fontsize=fontsize, color="#333333", zorder=2,
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none"))
                draw(child)

    draw(tree)
    shown = {leaf.approach for leaf in _leaves(tree)}
    handles = [FancyBboxPatch((0, 0), 1, 1, facecolor=c, edgecolor="#555555", label=a)
               for a, c in APPROACH_COLOURS.items() if a in shown]
    ax.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=fontsize,
              bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout()
    return fig


def _leaves(node: Node):
    if isinstance(node, Leaf):
        yield node
    else:
        yield from _leaves(node.yes)
        yield from _leaves(node.no)
