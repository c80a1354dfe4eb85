"""Text metrics as LongLaMP reports them: ROUGE-1 and ROUGE-L F1 (rouge-score, Porter stemming) and METEOR
(nltk) with WordNet read from local files, never downloaded at run time."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer

from percontrast_cli.errors import PercontrastError

# WordNet 3.0 lexicographer file names: Debian's wordnet-base ships the dictionary without this index file,
# which nltk's reader needs; it is fixed by the WordNet 3.0 release.
LEXNAMES = [
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1",
    "noun.feeling 1", "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1",
    "noun.person 1", "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1",
    "verb.body 2", "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2",
    "verb.consumption 2", "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2",
    "verb.perception 2", "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2",
    "adj.ppl 3",
]  # fmt: skip
WORDNET_SEARCH = ("PERCONTRAST_WORDNET", "/usr/share/wordnet")
MISSING_WORDNET = (
    "METEOR needs WordNet data and it is never downloaded at run time: install Debian's wordnet-base "
    "(apt-get install wordnet-base, as `make install-dev` does) or set PERCONTRAST_WORDNET to a directory "
    "holding the WordNet 3.0 dictionary files (data.noun, index.noun, ...)"
)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {name: float(np.mean([s[name].fmeasure for s in scores])) for name in ("rouge1", "rougeL")}


def find_wordnet_dir() -> Path | None:
    for candidate in (os.environ.get(WORDNET_SEARCH[0]), WORDNET_SEARCH[1]):
        if candidate and (Path(candidate) / "data.noun").is_file():
            return Path(candidate)
    return None


@lru_cache(maxsize=1)
def wordnet(cache_root: str = "~/.cache/percontrast"):
    """nltk's WordNet reader over local files (adding the lexnames index to a cached copy when missing)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = find_wordnet_dir()
    if source is None:
        raise PercontrastError(MISSING_WORDNET)
    root = source
    if not (source / "lexnames").is_file():
        root = Path(cache_root).expanduser() / "wordnet"
        root.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():  # copies: nltk refuses to follow links out of its data paths
            if path.is_file() and not (root / path.name).exists():
                shutil.copyfile(path, root / path.name)
        lines = [f"{i:02d}\t{name.replace(' ', chr(9))}\n" for i, name in enumerate(LEXNAMES)]
        (root / "lexnames").write_text("".join(lines))
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk only reads corpora from its authorised data paths

    class LocalWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # the mapping to nltk's packaged WordNet is for multilingual data; not used here

    with warnings.catch_warnings():  # "multilingual functions not available": expected without OMW data
        warnings.simplefilter("ignore", UserWarning)
        return LocalWordNet(str(root), None)


def words(text: str) -> list[str]:
    """Word and punctuation tokens, lowercased (nltk's METEOR expects pre-tokenized input)."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def meteor(predictions: list[str], references: list[str], wn=None) -> float:
    """Mean sentence METEOR; `wn` is a reader from `wordnet()` (the default cache location when omitted)."""
    from nltk.translate.meteor_score import meteor_score

    wn = wn or wordnet()
    pairs = zip(predictions, references, strict=True)
    scores = [meteor_score([words(ref)], words(pred), wordnet=wn) for pred, ref in pairs]
    return float(np.mean(scores))
