"""The example schema (LongLaMP's shape) and its validation, for generated data and local files alike."""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.fingerprint import fingerprint


@dataclass(frozen=True)
class Example:
    id: str
    user_id: str
    input: str
    output: str
    profile: tuple[str, ...]  # each profile item as the prompt shows it
    # Character spans of `output` that depend on the user (synthetic tasks only; None on real data).
    personal_spans: tuple[tuple[int, int], ...] | None = field(default=None)
    # What retrieval ranks (LongLaMP: each item's corpus text, and the query taken from the input); None:
    # the profile items and the input themselves.
    retrieval_texts: tuple[str, ...] | None = field(default=None)
    retrieval_query: str | None = field(default=None)
    # Ground truth for generation-level persona metrics (persona tasks, or data files that give it): the
    # user's persona values as (field, value) pairs ("" for a choice the user does not make, e.g. no emoji),
    # and the fields the reference uses. None: unknown (real data), no persona metrics.
    persona: tuple[tuple[str, str], ...] | None = field(default=None)
    persona_fields: tuple[str, ...] | None = field(default=None)

    @property
    def persona_values(self) -> dict[str, str]:
        return dict(self.persona or ())

    @property
    def query(self) -> str:
        return self.input if self.retrieval_query is None else self.retrieval_query

    @property
    def corpus(self) -> tuple[str, ...]:
        return self.profile if self.retrieval_texts is None else self.retrieval_texts

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["profile"] = list(self.profile)
        row["personal_spans"] = (
            None if self.personal_spans is None else [list(s) for s in self.personal_spans]
        )
        for key in ("retrieval_texts", "retrieval_query", "persona", "persona_fields"):
            if row[key] is None:  # absent unless set: older fingerprints and files hold
                del row[key]
        if self.retrieval_texts is not None:
            row["retrieval_texts"] = list(self.retrieval_texts)
        if self.persona is not None:
            row["persona"] = dict(self.persona)
        if self.persona_fields is not None:
            row["persona_fields"] = list(self.persona_fields)
        return row


@dataclass(frozen=True)
class RowSchema:
    """How a task's raw rows map to examples (LongLaMP: one per task config; see conf/task/*.yaml)."""

    user_field: str = "user_id"
    item_template: str | None = None  # a profile object as prompt text (the prompt style's template)
    retrieval_template: str | None = None  # a profile object as retrieval corpus text (None: the prompt text)
    query_after: str | None = None  # the retrieval query is the input's text after this marker
    word_limits: dict[str, int] = field(default_factory=dict)  # field -> words kept (abstract: 750)
    # Templates filled as the official LongLaMP code fills them (prompt.style=longlamp): every field as
    # Python's str() gives it, a null as "None" and an empty string as nothing; only an item lacking a field
    # altogether (where the official code stops with a KeyError) falls back to its own text fields. False: a
    # field must have text, or the item falls back (never "None", never an empty quote).
    literal: bool = False

    @classmethod
    def from_task(cls, task_cfg, style: str) -> RowSchema:
        get = task_cfg.get
        template = get("longlamp_item") if style == "longlamp" else get("profile_template")
        return cls(
            user_field=get("user_field", "user_id"),
            item_template=template or get("profile_template"),
            retrieval_template=get("retrieval_text"),
            query_after=get("query_after"),
            word_limits=dict(get("word_limits") or {}),
            literal=style == "longlamp",
        )


def dataset_fingerprint(examples: list[Example]) -> str:
    return fingerprint([e.to_json() for e in examples])


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def present(value: Any) -> bool:
    """A field that has something to show: not missing, not None, not an empty string."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _field_text(value: Any, limit: int | None) -> str:
    """A field as text: numbers as the hub stores them (5.0 stays "5.0"); with a word limit, its first `limit`
    words re-joined with single spaces, whatever its length (as the official `extract_first_750_words`)."""
    text = str(value)
    if limit is not None:
        text = " ".join(text.split()[:limit])
    return text


def _profile_text(
    item: Any, template: str | None, word_limits: dict[str, int] | None = None, literal: bool = False
) -> str | None:
    """A profile item as text: strings as they are; LongLaMP's dicts through the task's template when every
    field it names is present (`literal`: when the item has every field, whatever its value; see RowSchema),
    else the item's own text fields in order (never the template's bare words, never the text "None"); None
    when the item has no text at all."""
    if isinstance(item, str):
        return item if item.strip() else None
    if isinstance(item, dict):
        limits = word_limits or {}
        usable = (lambda name: name in item) if literal else (lambda name: present(item.get(name)))
        if template and all(usable(name) for name in template_fields(template)):
            return template.format_map({k: _field_text(v, limits.get(k)) for k, v in item.items()})
        parts = [
            _field_text(v.strip(), limits.get(k))
            for k, v in item.items()
            if k not in ("id", "author") and isinstance(v, str) and v.strip()
        ]
        return " ".join(parts) if parts else None
    return None


PROJECT_SCHEMA = RowSchema()  # this project's own files (the synthetic tasks' schema)


def validate_row(row: Any, where: str, position: str, schema: RowSchema = PROJECT_SCHEMA) -> Example:
    """Turn one raw row into an Example, or raise an error naming the file, line (or row) and field."""
    user_field = schema.user_field

    def fail(field_name: str, problem: str) -> PercontrastError:
        return PercontrastError(f"{where}: {position}: field '{field_name}': {problem}")

    if not isinstance(row, dict):
        raise PercontrastError(f"{where}: {position}: expected an object, got {type(row).__name__}")
    if not present(row.get(user_field)):
        raise fail(
            user_field,
            "missing: the user id (task.user_field) keeps test users out of training; set "
            "task.user_field to the column that names the user",
        )
    for name in ("input", "output"):
        if name not in row:
            raise fail(name, "missing")
        if not isinstance(row[name], str) or not row[name].strip():
            raise fail(name, f"expected a non-empty string, got {row[name]!r:.60}")
    if "profile" not in row:
        raise fail("profile", "missing (the user's earlier documents)")
    if not isinstance(row["profile"], list):
        raise fail("profile", f"expected a list, got {type(row['profile']).__name__}")
    profile, corpus = [], []
    for j, item in enumerate(row["profile"]):
        text = _profile_text(item, schema.item_template, schema.word_limits, schema.literal)
        if text is None:
            raise fail(f"profile[{j}]", "expected a non-empty string or an object with text fields")
        profile.append(text)
        if schema.retrieval_template is not None:
            corpus.append(_profile_text(item, schema.retrieval_template, literal=schema.literal) or text)
    query = row.get("retrieval_query")
    if schema.query_after is not None:
        marker = row["input"].find(schema.query_after)
        query = row["input"][marker + len(schema.query_after) :].strip() if marker >= 0 else None
    spans = row.get("personal_spans")
    if spans is not None:
        if not isinstance(spans, list):
            raise fail("personal_spans", "expected a list of [start, end] pairs")
        for j, span in enumerate(spans):
            ok = (
                isinstance(span, list | tuple)
                and len(span) == 2
                and all(isinstance(x, int) for x in span)
                and 0 <= span[0] < span[1] <= len(row["output"])
            )
            if not ok:
                raise fail(f"personal_spans[{j}]", f"expected [start, end] inside the output, got {span!r}")
        spans = tuple((int(a), int(b)) for a, b in spans)
    persona, persona_fields = _persona(row, fail)
    return Example(
        id=str(row["id"]) if present(row.get("id")) else f"{Path(where).stem}-{position.split()[-1]}",
        user_id=str(row[user_field]),
        input=row["input"],
        output=row["output"],
        profile=tuple(profile),
        personal_spans=spans,
        retrieval_texts=tuple(corpus) if schema.retrieval_template is not None else _texts(row),
        retrieval_query=query,
        persona=persona,
        persona_fields=persona_fields,
    )


def _persona(row: dict, fail) -> tuple[tuple[tuple[str, str], ...] | None, tuple[str, ...] | None]:
    """Optional persona ground truth: `persona` an object of string values, `persona_fields` the list of
    its fields that the output uses (required with `persona`)."""
    persona, fields = row.get("persona"), row.get("persona_fields")
    if persona is None:
        if fields is not None:
            raise fail("persona_fields", "given without 'persona' (the user's values)")
        return None, None
    if not isinstance(persona, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in persona.items()
    ):
        raise fail("persona", f"expected an object of string values, got {persona!r:.60}")
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise fail("persona_fields", f"expected a list of persona field names, got {fields!r:.60}")
    for name in fields:
        if name not in persona:
            raise fail("persona_fields", f"{name!r} is not a field of 'persona' ({', '.join(persona)})")
        if not persona[name].strip():
            raise fail("persona_fields", f"{name!r} is used by the output but its value is empty")
    return tuple(persona.items()), tuple(fields)


def _texts(row: dict) -> tuple[str, ...] | None:
    texts = row.get("retrieval_texts")
    return None if texts is None else tuple(str(t) for t in texts)


def write_examples(examples: list[Example], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(e.to_json()) + "\n" for e in examples))
