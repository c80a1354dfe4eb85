"""`percontrast inspect inspect.show=prompt`: the prompt text the model is given for one example, on stdout.

The text is the user turn exactly as the training, scoring and generation stages build it
(`encode.shown_prompt`: retrieval, the task's prompt style, profile items dropped to fit model.max_length),
before the chat template; stdout gets those bytes and nothing else (no newline added), so `> prompt.txt` holds
exactly the prompt.
"""

from __future__ import annotations

import sys

from percontrast_cli.data.encode import shown_prompt
from percontrast_cli.data.prompts import PromptFormat
from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.data.schema import Example
from percontrast_cli.runtime.errors import PercontrastError

SHOW = ("heatmap", "prompt")
SPLITS = ("train", "test")


def write_prompt(cfg, tokenizer, examples: list[Example], retriever: Retriever, out=None) -> str:
    """Write the prompt of example `cfg.example` of `examples` (the `cfg.inspect.split` split) to `out`
    (default: stdout) and return it."""
    index, split = cfg.example, cfg.inspect.split
    if not isinstance(index, int) or not 0 <= index < len(examples):
        raise PercontrastError(
            f"example={index} is out of range: the {split} split has {len(examples)} examples"
        )
    prompt = shown_prompt(
        tokenizer,
        examples[index],
        k=cfg.retrieval.k,
        max_length=cfg.model.max_length,
        chat=cfg.model.chat_template,
        fmt=PromptFormat.from_config(cfg),
        retriever=retriever,
    )
    if prompt.cut_tokens:  # a diagnostic, so stderr: stdout holds the prompt only
        print(
            f"percontrast: warning: even with no profile items this prompt exceeds model.max_length="
            f"{cfg.model.max_length}: the model sees it without its first {prompt.cut_tokens} tokens",
            file=sys.stderr,
        )
    out = out or sys.stdout
    out.write(prompt.text)
    out.flush()
    return prompt.text
