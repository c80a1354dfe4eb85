"""What one job of `run` would do, stage by stage, without doing any of it: the ids come from the steps' own
identity functions (so they are exactly the ids `run` makes), the store is only looked at (never tidied,
locked or written), no weights are loaded (a tokenizer may be, to count tokens and to fingerprint it), and
costs come from the calibration records (store/calibration.py) or, for memory, from the parameter count.

A stage whose inputs are not known yet (the tiny model's tokenizer is trained when the model is built, a
hub tokenizer that cannot be loaded here) has no id yet: it is to compute, and carries a stand-in id built
the same way from a stand-in tokenizer, so that jobs that would share it still count it once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from percontrast_cli.method.losses import CE, weight_source
from percontrast_cli.modeling.sizes import inference_memory, parameter_count, training_memory
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.steps import costs
from percontrast_cli.steps.context import Context, pick_device
from percontrast_cli.steps.curve_points import curve_steps, point_identities
from percontrast_cli.steps.evaluation import eval_examples, evaluation_identity
from percontrast_cli.steps.models import pretrained_location
from percontrast_cli.steps.scoring import training_set_identity
from percontrast_cli.steps.task_data import TaskData, encode_items, load_task
from percontrast_cli.steps.training import (
    main_scores_kind,
    needs_warmup,
    resumable_step,
    total_steps,
    training_identity,
    warmup_context,
)
from percontrast_cli.store import calibration
from percontrast_cli.store.artifacts import (
    MANIFEST,
    Artifact,
    incomplete_reason,
    is_artifact_id,
    load_artifact,
)
from percontrast_cli.store.fingerprint import fingerprint
from percontrast_cli.store.identity import model_identity

TRAINING = ("warm-up", "train")
SAMPLE = 256  # examples encoded to count tokens


@dataclass
class Stage:
    name: str  # model, warm-up, estimate, reference, train, eval; a curve's `point <s>` and `eval @<s>`
    role: str  # its role in the job's artifacts.json
    kind: str
    id: str  # the artifact id, or a stand-in when `known` is false
    known: bool
    status: str = "to compute"  # found | partly done | to compute
    resume_step: int | None = None
    work: list[tuple[str, float | None]] = field(default_factory=list)  # (work kind, units; None: unknown)
    steps: int | None = None
    training_tokens: str = ""
    generated_tokens: int | None = None
    seconds: float | None = None  # estimated wall time of what is left to compute
    basis: str = ""  # which calibration, or why unknown
    memory: str = ""
    work_examples: int = 0  # examples the work runs over (tokens per example times this, without a tokenizer)

    @property
    def shown_id(self) -> str:
        return self.id if self.known else "(new)"


@dataclass
class JobPlan:
    number: int
    overrides: str
    stages: list[Stage]
    notes: list[str]


def peek(root: Path, kind: str, artifact_id: str | None) -> Artifact | None:
    """The complete artifact in the store, read only (the store's own `find` tidies and verifies)."""
    if not is_artifact_id(artifact_id):
        return None
    path = root / kind / artifact_id
    if not (path / MANIFEST).is_file() or incomplete_reason(path) is not None:
        return None
    return load_artifact(path)


def stub(kind: str, artifact_id: str, tokenizer_fp: str) -> Artifact:
    return Artifact(kind, artifact_id, Path("."), {"inputs": {"tokenizer": tokenizer_fp}})


class Planner:
    def __init__(self, cfg, records: list[calibration.Record], data: TaskData | None = None):
        from percontrast_cli.store.artifacts import ArtifactStore

        self.cfg, self.records, self.notes = cfg, records, []
        self.root = Path(str(cfg.paths.artifacts))
        self.ctx = Context(cfg, ArtifactStore(self.root), pick_device(cfg.device), None)
        self.data = data if data is not None else self.load_data()
        self.tokenizer = None
        self.size = parameter_count(cfg.model)

    def load_data(self) -> TaskData | None:
        try:
            return load_task(self.cfg, check_retriever=False)
        except PercontrastError as exc:
            self.notes.append(f"data unavailable ({exc}): ids and token counts unknown here")
            return None

    # --- ids ------------------------------------------------------------------------------------------

    def stage(self, name, role, identity, known: bool) -> Stage:
        found = peek(self.root, identity.kind, identity.id) if known else None
        stage = Stage(name, role, identity.kind, identity.id, known, "found" if found else "to compute")
        if known and not found and identity.kind == "checkpoint":
            step = resumable_step(self.root / ".work" / f"checkpoint-{identity.id}")
            if step:
                stage.status, stage.resume_step = "partly done", step
        return stage

    def base_model(self) -> tuple[Stage, str, bool]:
        """The base model's stage, its tokenizer fingerprint (or a stand-in) and whether that is known."""
        cfg = self.cfg
        if cfg.model.source == "tiny":
            if self.data is None:
                config = {"model": OmegaConf.to_container(cfg.model), "seed": cfg.seed, "task": cfg.task.name}
                identity, known = model_identity(cfg, data_fp=fingerprint(config)), False
            else:
                identity, known = model_identity(cfg, data_fp=self.data.train_fp), True
        else:
            from percontrast_cli.modeling.load import weights_fingerprint

            location, revision = pretrained_location(cfg, convert=False)
            known = location is not None
            if not known:
                self.notes.append("model=smollm2 is not converted yet: its id is known after its first run")
            weights = weights_fingerprint(location, revision, cfg.paths.cache) if known else "(unconverted)"
            identity = model_identity(cfg, weights_fp=weights)
        stage = self.stage("model", "model", identity, known)
        stage.work = [("model", 1)]
        found = peek(self.root, "model", identity.id) if known else None
        if found is not None:
            self.tokenizer = self.load_tokenizer(found.path / "model" if cfg.model.source == "tiny" else None)
            return stage, found.inputs["tokenizer"], True
        if cfg.model.source != "tiny" and known:
            self.tokenizer = self.load_tokenizer(None)
            if self.tokenizer is not None:
                from percontrast_cli.modeling.load import tokenizer_fingerprint

                return stage, tokenizer_fingerprint(self.tokenizer), True
        return stage, f"(tokenizer of model {identity.id})", False

    def load_tokenizer(self, directory: Path | None):
        from percontrast_cli.modeling.load import load_model_and_tokenizer

        location, revision = (directory, None) if directory else pretrained_location(self.cfg, convert=False)
        try:
            return load_model_and_tokenizer(location, with_model=False, revision=revision)[1]
        except PercontrastError as exc:
            self.notes.append(f"tokenizer unavailable ({exc}): ids after the model are unknown")
            return None

    def plan(self) -> list[Stage]:
        cfg, ctx, data = self.cfg, self.ctx, self.data
        if cfg.checkpoint is not None:
            raise PercontrastError("plan: checkpoint=... is not planned yet; plan the run that makes it")
        model, tokenizer_fp, known = self.base_model()
        stages, start = [model], stub("model", model.id, tokenizer_fp)
        if data is None:  # nothing downstream can be named: stand-ins from the whole job config
            data = TaskData([], [])
            known = False
        if needs_warmup(cfg):
            identity = training_identity(warmup_context(ctx), start, data, CE, cfg.train.warmup_steps)
            warm = self.stage("warm-up", "start", identity, known)
            stages.append(warm)
            start = stub("checkpoint", warm.id, tokenizer_fp)
        scores = None
        if (kind := main_scores_kind(cfg)) is not None:
            identity = training_set_identity(ctx, kind, start, data)
            scored = self.stage(kind, kind, identity, known)
            stages.append(scored)
            scores = stub(kind, scored.id, tokenizer_fp)
        steps = self.main_steps()
        identity = training_identity(ctx, start, data, cfg.loss, steps or 0, scores)
        trained = self.stage("train", "checkpoint", identity, known)
        stages.append(trained)
        checkpoint = stub("checkpoint", trained.id, tokenizer_fp)
        stages += self.curve_stages(start, scores, data, steps, trained, tokenizer_fp, known)  # run's order
        stages.append(self.stage("eval", "eval", evaluation_identity(ctx, checkpoint, data), known))
        if self.data is None:
            for stage in stages[1:]:  # stand-ins must differ between jobs that differ anywhere
                job = OmegaConf.to_container(cfg, resolve=True)
                stage.id = fingerprint({"stage": stage.name, "job": job})
        self.add_work(stages, steps)
        return stages

    def curve_stages(self, start, scores, data, steps, trained, tokenizer_fp, known) -> list[Stage]:
        """eval.at_steps: the checkpoint saved at each point inside the run (`point <s>`: no work of its own,
        the training saves it on the way; but when the end exists already, the run goes again up to the last
        missing point) and the eval of each (`eval @<s>`; @0 evaluates the start; the end's is `eval`)."""
        cfg, ctx = self.cfg, self.ctx
        if not cfg.eval.get("at_steps"):
            return []
        if steps is None:
            self.notes.append("eval.at_steps: the run's length is unknown here: no curve point is planned")
            return []
        at_steps = curve_steps(cfg, steps)
        identity_at = functools.partial(training_identity, ctx, start, data, cfg.loss, scores=scores)
        rounds = weight_source(cfg.loss, cfg.estimator.refresh) == "rounds"
        points = point_identities(cfg.train, steps, at_steps, rounds, identity_at, tell=self.notes.append)
        saved = {step: self.stage(f"point {step}", f"point {step}", i, known) for step, i in points.items()}
        models = {step: stub("checkpoint", point.id, tokenizer_fp) for step, point in saved.items()}
        if 0 in at_steps:
            models[0] = start
        missing = [step for step, point in saved.items() if point.status != "found"]
        if missing and trained.status == "found":
            last = max(missing)
            saved[last].steps = last  # its work: the training again, up to the last missing point
            self.notes.append(
                f"eval.at_steps: the run's end exists but not every point: it trains again up to step {last} "
                f"(its time is point {last}'s)"
            )
        stages = list(saved.values())
        for step, model in sorted(models.items()):
            identity = evaluation_identity(ctx, model, data)
            stages.append(self.stage(f"eval @{step}", f"curve {step}", identity, known))
        return stages

    def layout(self) -> tuple[str, int]:
        name = self.cfg.distributed.name
        return name, (self.cfg.distributed.num_processes if name != "none" else 1)

    # --- work and cost --------------------------------------------------------------------------------

    def main_steps(self) -> int | None:
        cfg = self.cfg
        if cfg.train.epochs is None:
            return int(cfg.train.steps)
        if self.data is None:
            return None
        processes = cfg.distributed.num_processes if cfg.distributed.name != "none" else 1
        return total_steps(cfg.train, len(self.data.train), processes)

    def token_counts(self, examples, contrast: bool) -> tuple[float | None, float | None]:
        """(target tokens, sequence tokens per example) of `examples` with the tokenizer, None without; from
        the first SAMPLE examples, scaled (a plan of a large dataset stays seconds)."""
        if self.tokenizer is None or not examples or self.cfg.retrieval.method == "contriever":
            return None, None
        sample = examples[:SAMPLE]
        items = encode_items(self.tokenizer, sample, self.cfg, with_counterfactual=contrast)
        targets = sum(sum(1 for label in item["labels"] if label >= 0) for item in items)
        return targets * len(examples) / len(sample), sum(len(item["input_ids"]) for item in items) / len(
            items
        )

    def add_work(self, stages: list[Stage], steps: int | None) -> None:
        cfg, data = self.cfg, self.data
        train = data.train if data else []
        test = eval_examples(cfg, data) if data else []
        train_targets, train_length = self.token_counts(train, contrast=False)
        test_targets, _ = self.token_counts(test, contrast=False)
        processes = cfg.distributed.num_processes if cfg.distributed.name != "none" else 1
        global_batch = cfg.train.batch_size * cfg.train.grad_accum * processes
        for stage in stages:
            if stage.name in TRAINING:
                stage.steps = cfg.train.warmup_steps if stage.name == "warm-up" else steps
                source = None if stage.name == "warm-up" else weight_source(cfg.loss, cfg.estimator.refresh)
                stage.work = [(f"train:{source or 'ce'}", stage.steps)]
                if stage.steps is not None:
                    per_example = train_length or cfg.model.max_length
                    bound = "" if train_length else "≤ "
                    stage.training_tokens = f"{bound}{int(stage.steps * global_batch * per_example):,}"
            elif stage.name in ("estimate", "reference"):
                contrast = stage.name == "estimate"
                stage.work = [("score:contrast" if contrast else "score:factual", train_targets)]
                stage.work_examples = len(train)
            elif stage.kind == "checkpoint":  # a curve's point: saved on the way, or a run again up to it
                source = weight_source(cfg.loss, cfg.estimator.refresh)
                stage.work = [(f"train:{source or 'ce'}", stage.steps)] if stage.steps else []
            elif stage.kind == "eval":
                generations = len(test) * cfg.eval.samples  # eval.samples generations per target
                stage.generated_tokens = generations * cfg.eval.max_new_tokens if data else None
                stage.work = [("score:contrast", test_targets), ("generate", stage.generated_tokens)]
                stage.work_examples = len(test)
            self.estimate(stage)

    def estimate(self, stage: Stage) -> None:
        """Time and memory of what is left of `stage`, from the nearest calibrations."""
        cfg, ctx = self.cfg, self.ctx
        training = stage.name in TRAINING
        lora = cfg.train.lora.r if cfg.train.peft == "lora" else None
        if self.size.parameters:
            guess = (
                training_memory(self.size.parameters, ctx.precision, lora, *self.layout())
                if training
                else inference_memory(self.size.parameters, ctx.precision)
            )
            stage.memory = str(guess)
        else:
            stage.memory = f"unknown (parameter count: {self.size.how})"
        if stage.status == "found":
            stage.seconds, stage.basis = 0.0, "found"
            return
        total, bases, peaks = 0.0, [], []
        for work, units in stage.work:
            key = costs.calibration_key(cfg, ctx.device, ctx.precision, work)
            record = calibration.nearest(self.records, key)
            if record is None:
                stage.seconds = None
                stage.basis = (
                    f"unknown: no calibration for {key.model} on {key.device} ({key.precision}, {work})"
                )
                return
            if units is None and "tokens_per_example" in record.extra:
                units = record.extra["tokens_per_example"] * getattr(stage, "work_examples", 0)
            if units is None:
                stage.seconds, stage.basis = None, f"unknown: how much {work} work is unknown here"
                return
            if stage.resume_step and stage.steps:
                units = units * (stage.steps - stage.resume_step) / stage.steps
            total += record.overhead_seconds + units * record.seconds_per_unit
            bases.append(calibration.describe(record, key))
            if record.peak_memory_bytes:
                peaks.append((record.peak_memory_bytes, record.memory))
        stage.seconds, stage.basis = total, "; ".join(dict.fromkeys(bases))
        if peaks:
            from percontrast_cli.modeling.sizes import human_bytes

            peak, what = max(peaks)
            stage.memory = f"{human_bytes(peak)} (measured, {what})"
