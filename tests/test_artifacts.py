import pytest

from percontrast_cli.artifacts import ArtifactStore
from percontrast_cli.errors import PercontrastError


def publish(store, kind, config, inputs):
    artifact_id = store.artifact_id(kind, config, inputs)
    with store.create(kind, artifact_id, config, inputs) as (tmp, _):
        (tmp / "payload.txt").write_text("x")
    return store.find(kind, artifact_id)


def test_id_is_a_fingerprint_of_config_and_inputs(tmp_path):
    store = ArtifactStore(tmp_path)
    a = store.artifact_id("estimate", {"k": 1}, {"data": "d1"})
    assert a == store.artifact_id("estimate", {"k": 1}, {"data": "d1"})
    assert a != store.artifact_id("estimate", {"k": 2}, {"data": "d1"})
    assert a != store.artifact_id("estimate", {"k": 1}, {"data": "d2"})


def test_crash_leaves_no_half_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.create("eval", "abc", {}, {}) as (tmp, _):
        (tmp / "partial").write_text("x")
        raise RuntimeError("killed")
    assert store.find("eval", "abc") is None
    assert list((tmp_path / "eval").iterdir()) == []


def test_resolve_by_id_path_and_latest(tmp_path):
    store = ArtifactStore(tmp_path)
    first = publish(store, "checkpoint", {"n": 1}, {})
    second = publish(store, "checkpoint", {"n": 2}, {})
    assert store.resolve("checkpoint", first.id).path == first.path
    assert store.resolve("checkpoint", str(first.path)).id == first.id
    assert store.resolve("checkpoint", "latest").id == second.id
    with pytest.raises(PercontrastError, match="no checkpoint artifact 'nope'"):
        store.resolve("checkpoint", "nope")
    with pytest.raises(PercontrastError, match="is a checkpoint artifact, expected a estimate"):
        store.resolve("estimate", str(first.path))


def test_mismatched_inputs_are_rejected(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = publish(store, "estimate", {}, {"tokenizer": "tok-A", "data": "data-1"})
    artifact.require_input("tokenizer", "tok-A", "tokenizer")
    with pytest.raises(PercontrastError, match="built with tokenizer 'tok-A', but this run uses 'tok-B'"):
        artifact.require_input("tokenizer", "tok-B", "tokenizer")
