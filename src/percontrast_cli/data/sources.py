"""One loading path for every task: rows come from the hub (or its local cache) through `datasets`, or from
local .jsonl/.json/.parquet files; every row then goes through the same schema mapping and validation."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from percontrast_cli.data.schema import PROJECT_SCHEMA, Example, RowSchema, validate_row
from percontrast_cli.runtime.errors import PercontrastError

SUFFIXES = (".jsonl", ".json", ".parquet")
Rows = Iterator[tuple[str, str, object]]  # (where, position: "line 3" / "row 3", 1-based; raw row)


def read_utf8(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 are an error naming the file and the 1-based line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PercontrastError(
            f"{path}: line {line}: byte 0x{data[exc.start]:02x} at column {column} is not valid UTF-8 "
            "(save the file as UTF-8)"
        ) from exc


def _json_rows(path: Path) -> Rows:
    text = read_utf8(path)
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield str(path), f"line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PercontrastError(f"{path}: line {number}: not valid JSON ({exc.msg})") from exc
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PercontrastError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, list):
        raise PercontrastError(f"{path}: expected a JSON list of rows")
    for number, row in enumerate(data, start=1):
        yield str(path), f"row {number}", row


def file_rows(path: str | Path) -> Rows:
    path = Path(path)
    if not path.is_file():
        raise PercontrastError(f"{path}: data file not found")
    if path.suffix in (".jsonl", ".json"):
        yield from _json_rows(path)
    elif path.suffix == ".parquet":
        import datasets

        rows = datasets.load_dataset("parquet", data_files=str(path), split="train")
        for number, row in enumerate(rows, start=1):
            yield str(path), f"row {number}", row
    else:
        raise PercontrastError(f"{path}: unsupported file type {path.suffix!r} (use {', '.join(SUFFIXES)})")


def hub_rows(dataset: str, config: str, split: str) -> Rows:
    """A split from the hub, or from the local HF cache when the hub is unreachable."""
    import datasets
    import huggingface_hub.constants

    from percontrast_cli.modeling.load import hub_reachable

    reachable = hub_reachable()
    if not reachable:  # go straight to the cache instead of retrying the network
        huggingface_hub.constants.HF_HUB_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
    try:
        loaded = datasets.load_dataset(dataset, config, split=split)
    except Exception as exc:  # datasets raises several types for "not found / not cached"
        reason = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if reachable:
            raise PercontrastError(
                f"dataset {dataset} ({config}, split {split}) could not be loaded from the hub ({reason})"
            ) from exc
        raise PercontrastError(
            f"dataset {dataset} ({config}, split {split}) could not be loaded: the hub is unreachable and it "
            f"is not in the local Hugging Face cache. Download it where the hub is reachable, or pass local "
            f"files with data.path=FILE_OR_DIR ({reason})"
        ) from exc
    for number, row in enumerate(loaded, start=1):
        yield f"{dataset}/{config}/{split}", f"row {number}", row


SPLITS = ("train", "val", "test")


def local_split_files(path: Path, needed: tuple[str, ...]) -> dict[str, Path]:
    """A directory holding train.*, test.* and (optionally, for eval.split=val) val.* files."""
    found = {}
    for split in SPLITS:
        matches = [path / f"{split}{s}" for s in SUFFIXES if (path / f"{split}{s}").is_file()]
        if matches:
            found[split] = matches[0]
        elif split in needed:
            raise PercontrastError(f"{path}: no {split}{{{','.join(SUFFIXES)}}} file in this data directory")
    return found


def to_examples(rows: Rows, schema: RowSchema = PROJECT_SCHEMA) -> list[Example]:
    examples = [validate_row(row, where, pos, schema) for where, pos, row in rows]
    require_unique_ids(examples)
    return examples


def require_disjoint_users(splits: dict[str, list[Example]], where: str) -> None:
    """split_style=user promises that evaluation users were never trained on."""
    train_users = {e.user_id for e in splits["train"]}
    for name, examples in splits.items():
        if name == "train":
            continue
        shared = sorted(train_users & {e.user_id for e in examples})
        if shared:
            raise PercontrastError(
                f"{where}: user {shared[0]!r} is in both the train and the {name} split ({len(shared)} "
                "shared users); with task.split_style=user the splits must not share users"
            )


def require_unique_ids(examples: list[Example], what: str = "") -> None:
    """Scores and predictions are keyed by example id: two examples with one id would swap them."""
    seen: dict[str, Example] = {}
    for example in examples:
        if example.id in seen:
            raise PercontrastError(
                f"duplicate example id {example.id!r}{what}: every example needs its own id (field 'id')"
            )
        seen[example.id] = example


def load_examples(path: str | Path) -> list[Example]:
    """Validated examples from one local file in this project's schema (the synthetic task's, too)."""
    return to_examples(file_rows(path))


def split_by_user(examples: list[Example], test_fraction: float, where: str) -> dict[str, list[Example]]:
    """A single file becomes train/test by user (a deterministic hash), so test users are unseen."""
    users = sorted({e.user_id for e in examples})
    if len(users) < 2:
        raise PercontrastError(
            f"{where}: need at least 2 users to split by user, found {len(users)}: give a directory with "
            "train.* and test.* files instead"
        )
    test_users = {u for u in users if zlib.crc32(u.encode()) % 1000 < test_fraction * 1000}
    if not test_users or len(test_users) == len(users):  # tiny files: still keep both splits non-empty
        test_users = set(users[-max(1, round(len(users) * test_fraction)) :])
    return {
        "train": [e for e in examples if e.user_id not in test_users],
        "test": [e for e in examples if e.user_id in test_users],
    }


def load_splits(
    task_cfg, data_cfg, style: str = "plain", eval_split: str = "test"
) -> dict[str, list[Example]]:
    """The train split and the evaluation split (`eval_split`: test, or val for model selection) from
    data.path (any task) or from the task's hub dataset (its train / val / test splits)."""
    schema = RowSchema.from_task(task_cfg, style)
    needed = ("train", eval_split)
    if data_cfg.path:
        path = Path(data_cfg.path)
        if path.is_dir():
            files = local_split_files(path, needed)
            splits = {split: to_examples(file_rows(f), schema) for split, f in files.items()}
            if task_cfg.get("split_style", "user") == "user":
                require_disjoint_users(splits, str(path))
            splits = {name: splits[name] for name in needed}
        else:
            if eval_split != "test":
                raise PercontrastError(
                    f"eval.split={eval_split} needs a data directory with train.*, val.* and test.* files; "
                    f"data.path={path} is a single file (split into train and test by user)"
                )
            splits = split_by_user(to_examples(file_rows(path), schema), data_cfg.test_fraction, str(path))
    elif task_cfg.get("hub_dataset"):
        hub = task_cfg.hub_dataset, task_cfg.hub_config
        names = {"train": task_cfg.get("train_split", "train"), "test": task_cfg.get("test_split", "test")}
        names["val"] = task_cfg.get("val_split", "val")
        splits = {split: to_examples(hub_rows(*hub, names[split]), schema) for split in needed}
    else:
        raise PercontrastError(
            f"task={task_cfg.name} has no public dataset: point data.path at a .jsonl/.json/.parquet file "
            "(or a directory with train.* and test.*) in the LongLaMP schema"
        )
    for split, examples in splits.items():
        if not examples:
            raise PercontrastError(f"task={task_cfg.name}: the {split} split is empty")
    require_unique_ids([e for rows in splits.values() for e in rows], " across the splits")
    return {"train": splits["train"], "test": splits[eval_split]}
