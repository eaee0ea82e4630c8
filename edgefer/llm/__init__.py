"""The vision-LLM second opinion: prompt, parser, client, cache, budgets and the async worker.

The frame loop never waits on the network: ``SecondOpinion.submit`` only enqueues, a background
thread runs an asyncio loop with ``openai.AsyncOpenAI``, and answers are collected with
``poll``. Heavy imports (openai) happen when the worker starts.
"""
