"""Text metrics as LongLaMP's official evaluator computes them, offline: ROUGE-1 and ROUGE-L F1 through
rouge-score (its tokenizer, no stemming unless asked, mean of per-example F1) and METEOR as Hugging Face
`evaluate`'s `meteor` (NLTK word_tokenize on both sides, alpha 0.9, beta 3, gamma 0.5, mean), with WordNet
read from local files, never downloaded at run time. Also the official "drop empty" variant (examples with an
empty generation or target left out) and the count of empty generations."""

from __future__ import annotations

import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from filelock import FileLock

from percontrast_cli.runtime.errors import PercontrastError

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


METEOR_PARAMS = {"alpha": 0.9, "beta": 3.0, "gamma": 0.5}  # evaluate's meteor defaults


def rouge_scores(predictions: list[str], references: list[str], stemmer: bool = False) -> dict:
    """Per-example ROUGE-1 and ROUGE-L F1."""
    from rouge_score import rouge_scorer  # here, not at the top: it imports all of nltk (1.5 s)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=stemmer)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {name: np.array([s[name].fmeasure for s in scores]) for name in ("rouge1", "rougeL")}


def text_scores(
    predictions: list[str], references: list[str], stemmer: bool = False, wn=None, with_meteor: bool = True
) -> dict[str, np.ndarray]:
    """Per-example ROUGE-1, ROUGE-L (and METEOR): what the eval's per-example rows keep for the report's
    bootstrap, and what `text_metrics` averages."""
    scores = rouge_scores(predictions, references, stemmer)
    if with_meteor:
        scores["meteor"] = meteor_scores(predictions, references, wn)
    return scores


def text_metrics(
    predictions: list[str],
    references: list[str],
    stemmer: bool = False,
    wn=None,
    with_meteor: bool = True,
    scores: dict | None = None,
) -> dict[str, float]:
    """ROUGE-1/L (and METEOR) over all examples, the same over the examples whose generation and target are
    both non-empty strings (`*_drop_empty`: the official scorer's variant; a whitespace-only generation is
    kept there), and the number of blank (empty or whitespace-only) generations.
    ``scores``: the per-example scores of these pairs when the caller already has them (`text_scores`).
    Every metric is a mean of per-example scores, so a subset's value is the mean of its examples' scores."""
    scores = dict(scores) if scores is not None else rouge_scores(predictions, references, stemmer)
    if with_meteor and "meteor" not in scores:
        scores["meteor"] = meteor_scores(predictions, references, wn)
    if not with_meteor:
        scores.pop("meteor", None)
    metrics = {name: float(values.mean()) for name, values in scores.items()}
    # The official scorer drops a pair only when a string is empty: whitespace is kept (and scores 0).
    keep = np.array([bool(p and r) for p, r in zip(predictions, references, strict=True)])
    metrics["empty_generations"] = float(sum(not p.strip() for p in predictions))
    if keep.any():
        for name, values in scores.items():
            metrics[f"{name}_drop_empty"] = float(np.asarray(values)[keep].mean())
    return metrics


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
        root.parent.mkdir(parents=True, exist_ok=True)
        # Parallel jobs (and the ranks of one) share this cache: one builds it, in a temp dir renamed when
        # complete, and the others wait for it; never a half-written lexnames file.
        with FileLock(str(root.with_name("wordnet.lock"))):
            if not (root / "lexnames").is_file():
                tmp = root.with_name(f"wordnet.tmp-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                for path in source.iterdir():  # copies: nltk refuses to follow links out of its data paths
                    if path.is_file():
                        shutil.copyfile(path, tmp / path.name)
                lines = [f"{i:02d}\t{name.replace(' ', chr(9))}\n" for i, name in enumerate(LEXNAMES)]
                (tmp / "lexnames").write_text("".join(lines))
                shutil.rmtree(root, ignore_errors=True)  # an incomplete copy from an older version
                tmp.rename(root)
            # nltk refuses files that others may write (a group-shared umask, 002, makes them so)
            for path in (root, *root.iterdir()):
                mode = path.stat().st_mode
                if mode & 0o022 and path.stat().st_uid == os.geteuid():
                    path.chmod(mode & ~0o022)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk only reads corpora from its authorised data paths

    class LocalWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # the mapping to nltk's packaged WordNet is for multilingual data; not used here

    with warnings.catch_warnings():  # "multilingual functions not available": expected without OMW data
        warnings.simplefilter("ignore", UserWarning)
        return LocalWordNet(str(root), None)


@lru_cache(maxsize=1)
def sentence_splitter():
    """NLTK's English Punkt model when its data is installed (what `word_tokenize` uses); otherwise Punkt's
    untrained splitter, which differs from it only on abbreviations it would have learned (e.g. "Dr.")."""
    import nltk
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return lambda text: nltk.sent_tokenize(text, language="english")
    except LookupError:
        return PunktSentenceTokenizer().tokenize


def word_tokens(text: str) -> list[str]:
    """NLTK's word_tokenize: sentences, then the Treebank-style word tokenizer on each (case kept)."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [token for sentence in sentence_splitter()(text) for token in tokenizer.tokenize(sentence)]


def meteor_scores(predictions: list[str], references: list[str], wn=None) -> np.ndarray:
    """Per-example METEOR as `evaluate`'s meteor computes it; `wn` is a reader from `wordnet()`."""
    from nltk.translate.meteor_score import single_meteor_score

    wn = wn or wordnet()
    pairs = zip(predictions, references, strict=True)
    return np.array(
        [
            single_meteor_score(word_tokens(ref), word_tokens(pred), wordnet=wn, **METEOR_PARAMS)
            for pred, ref in pairs
        ],
        dtype=float,
    )


def meteor(predictions: list[str], references: list[str], wn=None) -> float:
    """Mean METEOR as `evaluate`'s meteor computes it; `wn` is a reader from `wordnet()`."""
    return float(np.mean(meteor_scores(predictions, references, wn)))
