"""Scale-out pieces that need no process group: how N processes share one process's batches, the step count
in global examples, lockstep scoring, the gathered-checkpoint rebuild, and the wrapper-proof model checks."""

import pytest
import torch
from omegaconf import OmegaConf

from percontrast_cli.data.encode import IGNORE, Collator
from percontrast_cli.method.contrast import has_active_dropout
from percontrast_cli.method.gathered import rebuilt
from percontrast_cli.method.trainer import FILLER, RankShare, ScoreTable, WithFiller
from percontrast_cli.modeling.forward import target_logits
from percontrast_cli.modeling.lora import wrap_lora
from percontrast_cli.runtime import distributed
from percontrast_cli.steps.training import total_steps


def one_process_batches(order, batch):
    return [order[i : i + batch] for i in range(0, len(order), batch)]


@pytest.mark.parametrize("n, per_rank, world", [(10, 2, 2), (12, 2, 2), (7, 1, 4), (3, 2, 3), (16, 3, 2)])
def test_ranks_split_each_one_process_batch_and_see_each_example_once_per_epoch(n, per_rank, world):
    order = list(torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist())
    shares = [list(RankShare(order, per_rank, rank, world)) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # every rank takes the same number of micro-batches
    assert all(len(RankShare(order, per_rank, rank, world)) == len(shares[0]) for rank in range(world))
    for step, batch in enumerate(one_process_batches(order, per_rank * world)):
        pieces = [shares[rank][step] for rank in range(world)]
        assert [i for piece in pieces for i in piece if i != FILLER] == batch  # the same examples, in order
        assert all(piece == [FILLER] for piece in pieces if FILLER in piece)  # a filler only stands alone
    seen = [i for share in shares for piece in share for i in piece if i != FILLER]
    assert sorted(seen) == list(range(n))  # each example exactly once an epoch


def test_a_filler_row_has_no_targets_no_scores_and_collates_with_real_rows(training_items):
    items = [{**item, "index": i} for i, item in enumerate(training_items)]
    rows = WithFiller(items)
    filler = rows[FILLER]
    assert filler["index"] is None and set(filler["labels"]) == {IGNORE} and filler["personal"] == []
    batch = Collator(0)([filler])
    assert batch["keep"] == 1 and batch["target_positions"].numel() == 0
    table = ScoreTable([torch.ones(sum(label != IGNORE for label in item["labels"])) for item in items])
    assert table.lookup(batch).abs().sum() == 0
    mixed = Collator(0)([items[0], filler])
    assert table.lookup(mixed).sum() == sum(label != IGNORE for label in items[0]["labels"])


def test_epochs_count_examples_over_all_processes():
    cfg = OmegaConf.create({"epochs": 3, "steps": 999, "batch_size": 4, "grad_accum": 2})
    one = total_steps(OmegaConf.merge(cfg, {"batch_size": 8}), 100, processes=1)
    assert one == total_steps(cfg, 100, processes=2) == 21  # 3 * ceil(ceil(100 / 8) / 2), as the Trainer
    assert total_steps(cfg, 100, processes=8) == 6  # 3 * ceil(ceil(100 / 32) / 2): 3 epochs, not 24
    assert total_steps(OmegaConf.merge(cfg, {"epochs": None}), 100, processes=8) == 999


def test_lockstep_batches_give_every_rank_as_many_forward_passes(monkeypatch):
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank_and_world", lambda rank=rank: (rank, 3))
        assert len(distributed.my_batches(7, lockstep=True)) == 3
        assert set(distributed.my_batches(7, lockstep=True)) == set(distributed.my_batches(7))
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (2, 3))
    assert distributed.my_batches(2) == [] and distributed.my_batches(2, lockstep=True) == [0]


@pytest.mark.parametrize("lora", [False, True])
def test_a_gathered_state_dict_rebuilds_the_model_on_one_rank(model, lora):
    """What rank 0 does with FSDP's / ZeRO-3's gathered weights: a plain module, same outputs."""
    if lora:
        lora_cfg = OmegaConf.create(
            {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
        )
        model = wrap_lora(model, lora_cfg)
        for name, param in model.named_parameters():  # non-zero adapters, so that they matter
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    copy = rebuilt(model, state)
    assert copy is not model and type(copy) is type(model)
    ids = torch.randint(3, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids).logits, model(input_ids=ids).logits)
    if lora:  # merging (what save_trained does) works on the copy
        merged = copy.merge_and_unload()
        with torch.no_grad():
            torch.testing.assert_close(merged(input_ids=ids).logits, model(input_ids=ids).logits)


class Wrapper(torch.nn.Module):
    """Stands in for DDP / FSDP 1: the model under `.module`, no `config` of its own."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_dropout_is_detected_through_a_wrapper(model):
    model.config.attention_dropout = 0.1
    wrapped = Wrapper(model).train()
    assert has_active_dropout(wrapped)
    assert not has_active_dropout(wrapped.eval())


def test_teacher_forced_passes_build_no_kv_cache(model):
    seen = {}
    forward = model.forward

    def spy(**kwargs):
        seen.update(kwargs)
        return forward(**kwargs)

    model.forward = spy
    ids = torch.randint(3, 100, (1, 6))
    batch = {"keep": 3, "input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": None}
    batch["position_ids"] = torch.arange(6)[None]
    out = target_logits(model, batch)
    assert seen["use_cache"] is False and out.shape[1] == 3
