"""The tiny default model: a seeded Llama built from the config, with a byte-level BPE tokenizer trained on
the task's training text. Small enough to train from scratch on a laptop CPU in a minute or two."""

from __future__ import annotations

import re
import threading

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

MAX_WORD_CHARS = 256
LONG_WORD = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")
MAX_TRAINING_CHARS = 64_000_000  # ~64 MB of text: far more than a vocabulary of the tiny model's size needs
SPECIAL_TOKENS = {"pad_token": "<|pad|>", "eos_token": "<|eos|>", "bos_token": "<|bos|>"}


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    train_answering_ctrl_c(tokenizer, bounded(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def bounded(texts: list[str]) -> list[str]:
    """The training text, bounded: BPE training is quadratic in a word's length (a 100 KB word: ~7 s, 10 MB:
    hours), so runs of non-space characters are cut to MAX_WORD_CHARS (no word of a language is that long),
    and the whole to MAX_TRAINING_CHARS."""
    out, total = [], 0
    for text in texts:
        text = LONG_WORD.sub(lambda m: m.group(0)[:MAX_WORD_CHARS], text)
        if total + len(text) > MAX_TRAINING_CHARS:
            break
        out.append(text)
        total += len(text)
    return out


def train_answering_ctrl_c(tokenizer: Tokenizer, texts: list[str], trainer) -> None:
    """The Rust trainer does not return to Python until it is done, so a signal waited for it: it trains on a
    daemon thread (the GIL released) while this thread waits, where Ctrl-C / SIGTERM raise at once."""
    done, failure = threading.Event(), []

    def work() -> None:
        try:
            tokenizer.train_from_iterator(texts, trainer)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, daemon=True, name="tokenizer-training").start()
    while not done.wait(0.1):
        pass
    if failure:
        raise failure[0]


def build_tiny_model(model_cfg, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        max_position_embeddings=model_cfg.max_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
