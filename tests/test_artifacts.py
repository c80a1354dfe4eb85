import os

import pytest

from percontrast_cli.artifacts import ArtifactStore, _host
from percontrast_cli.errors import PercontrastError
from percontrast_cli.identity import Identity


def publish(store, kind, config, inputs):
    artifact_id = Identity(kind, config, inputs).id
    with store.create(kind, artifact_id, config, inputs) as (tmp, _):
        (tmp / "payload.txt").write_text("x")
    return store.find(kind, artifact_id)


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


def test_directory_without_manifest_is_moved_aside_and_rebuilt(tmp_path, capsys):
    """The crash leftover that used to wedge every rerun: a payload dir with no manifest."""
    store = ArtifactStore(tmp_path)
    artifact_id = Identity("checkpoint", {"n": 1}, {}).id
    leftover = tmp_path / "checkpoint" / artifact_id
    leftover.mkdir(parents=True)
    (leftover / "weights").write_text("half")
    assert store.find("checkpoint", artifact_id) is None  # incomplete: not reused
    assert "incomplete checkpoint" in capsys.readouterr().err
    assert not leftover.exists() and list((tmp_path / "checkpoint").glob(".broken-*"))
    rebuilt = publish(store, "checkpoint", {"n": 1}, {})
    assert rebuilt.id == artifact_id and (rebuilt.path / "payload.txt").is_file()


@pytest.mark.parametrize("manifest", ["{}", "not json", '{"kind": "checkpoint"}'])
def test_unusable_manifest_is_replaced_on_publish(tmp_path, manifest):
    store = ArtifactStore(tmp_path)
    artifact_id = Identity("checkpoint", {"n": 1}, {}).id
    (tmp_path / "checkpoint" / artifact_id).mkdir(parents=True)
    (tmp_path / "checkpoint" / artifact_id / "manifest.json").write_text(manifest)
    with pytest.raises(PercontrastError, match="not a usable artifact"):
        store.resolve("checkpoint", str(tmp_path / "checkpoint" / artifact_id))
    # publishing over it (the stage rerun) moves it aside instead of keeping the broken one
    with store.create("checkpoint", artifact_id, {"n": 1}, {}) as (tmp, _):
        (tmp / "payload.txt").write_text("x")
    assert store.find("checkpoint", artifact_id).manifest["config"] == {"n": 1}


def test_reused_artifact_with_missing_payload_is_an_error_naming_it(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = publish(store, "checkpoint", {"n": 1}, {})
    (artifact.path / "payload.txt").unlink()
    with pytest.raises(
        PercontrastError, match=f"checkpoint artifact {artifact.id} .* payload.txt is missing"
    ):
        store.find("checkpoint", artifact.id)
    with pytest.raises(PercontrastError, match="payload.txt is missing"):
        store.resolve("checkpoint", str(artifact.path))


def test_leftover_temporaries_are_cleaned_and_never_latest(tmp_path):
    store = ArtifactStore(tmp_path)
    publish(store, "eval", {"n": 1}, {})
    dead = tmp_path / "eval" / f".tmp-abc-{_host()}-999999999-deadbeef"  # a pid that cannot be alive
    live = tmp_path / "eval" / f".tmp-abd-{_host()}-{os.getpid()}-cafecafe"
    for tmp in (dead, live):
        tmp.mkdir()
        (tmp / "manifest.json").write_text(
            '{"kind": "eval", "id": "x", "created": 9e12, "config": {}, "inputs": {}}'
        )
    assert store.latest("eval").id != "x"  # a temporary, even with the newest manifest, is never latest
    store.find("eval", "anything")
    assert not dead.exists() and live.exists()  # a live writer keeps its temp dir


def test_artifact_ids_follow_their_kinds_code(monkeypatch):
    before = Identity("estimate", {"k": 1}, {}).id
    monkeypatch.setattr("percontrast_cli.identity.code_hash", lambda kind: "other-code")
    assert Identity("estimate", {"k": 1}, {}).id != before
