"""LLM applications: chat targets and an application description. Importing this package loads neither
``transformers`` nor a model."""

from sparring.llm.app import Application, Document, load_application
from sparring.llm.chat import ChatReply, ChatTarget, LocalChatModel, Message
from sparring.llm.openai_api import OpenAIChatClient
from sparring.llm.server import make_chat_server

__all__ = ["Application", "ChatReply", "ChatTarget", "Document", "LocalChatModel", "Message", "OpenAIChatClient",
           "load_application", "make_chat_server"]
