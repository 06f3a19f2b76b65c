"""LLM applications: chat targets, an application description, prompt-injection attacks, deterministic detectors,
reproducible runs. Importing this package loads neither ``transformers`` nor a model.

>>> from sparring.llm import Application, SecretLeakDetector
>>> SecretLeakDetector("PLUTO-7731")("P L U T O - 7 7 3 1").kind
'spaced'
"""

from sparring.llm.app import Application, DefenceSpec, Document, load_application
from sparring.llm.attacks import ATTACKS, CATEGORIES, plan_attempts
from sparring.llm.chat import ChatReply, ChatTarget, LocalChatModel, Message
from sparring.llm.converters import CONVERTERS, convert
from sparring.llm.defenses import DEFENCES, plan_defended, redact
from sparring.llm.detectors import (
                                    ExfiltrationDetector,
                                    MarkerDetector,
                                    PromptLeakDetector,
                                    SecretLeakDetector,
                                    load_leak_set,
)
from sparring.llm.guard import InputGuard, evaluate_guard, load_guard_set
from sparring.llm.judge import RefusalJudge, evaluate_judge, load_judge_set, rogan_gladen
from sparring.llm.openai_api import OpenAIChatClient
from sparring.llm.run import check_gates, rescore, run_multiturn, run_redteam, summarize, wilson_interval
from sparring.llm.server import make_chat_server
from sparring.llm.utility import load_utility_set, run_utility, score_task

__all__ = [
    "ATTACKS",
    "CATEGORIES",
    "CONVERTERS",
    "DEFENCES",
    "Application",
    "ChatReply",
    "ChatTarget",
    "DefenceSpec",
    "Document",
    "ExfiltrationDetector",
    "InputGuard",
    "LocalChatModel",
    "MarkerDetector",
    "Message",
    "OpenAIChatClient",
    "PromptLeakDetector",
    "RefusalJudge",
    "SecretLeakDetector",
    "check_gates",
    "convert",
    "evaluate_guard",
    "evaluate_judge",
    "load_application",
    "load_guard_set",
    "load_judge_set",
    "load_leak_set",
    "load_utility_set",
    "make_chat_server",
    "plan_attempts",
    "plan_defended",
    "redact",
    "rescore",
    "rogan_gladen",
    "run_multiturn",
    "run_redteam",
    "run_utility",
    "score_task",
    "summarize",
    "wilson_interval",
]
