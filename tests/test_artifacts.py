import errno
import os
import shutil

import pytest

from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.artifacts import ArtifactStore, _host
from percontrast_cli.store.identity import Identity


def artifact_id_of(kind, config, inputs):
    return Identity(kind, config, inputs).id


def publish(store, kind, config, inputs):
    artifact_id = Identity(kind, config, inputs).id
    with store.create(kind, artifact_id, config, inputs) as (tmp, _):
        (tmp / "payload.txt").write_text("x")
    return store.find(kind, artifact_id)


def test_crash_leaves_no_half_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.create("eval", "abcabcabcabc", {}, {}) as (tmp, _):
        (tmp / "partial").write_text("x")
        raise RuntimeError("killed")
    assert store.find("eval", "abcabcabcabc") is None
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
    with pytest.raises(PercontrastError, match="is not a usable checkpoint artifact: .*manifest.json"):
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
        PercontrastError,
        match=f"checkpoint artifact {artifact.id} is damaged: .*/payload.txt is missing; delete ",
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
    store.find("eval", "0" * 12)  # any lookup tidies the kind folder
    assert not dead.exists() and live.exists()  # a live writer keeps its temp dir
    # with no kind (the parent of a failed multi-process launch, whose killed ranks left theirs): every kind
    killed = tmp_path / "checkpoint" / f".tmp-abe-{_host()}-999999999-deadbeef"
    killed.mkdir(parents=True)
    store.clean_temporaries()
    assert not killed.exists() and live.exists()


def test_artifact_ids_follow_their_kinds_code():
    assert Identity("estimate", {"k": 1}, {}, "code-a").id != Identity("estimate", {"k": 1}, {}, "code-b").id


# --- Ownership: the store touches only its own id directories -------------------------------------------


def tree(root):
    """Every path under `root` with its size (files) or `/` (directories): equal trees, nothing moved."""
    return sorted(
        (str(p.relative_to(root)), "/" if p.is_dir() else p.stat().st_size) for p in root.rglob("*")
    )


def test_a_directory_that_is_not_an_artifact_is_never_moved(tmp_path, monkeypatch):
    """`eval checkpoint=/my/data` used to rename the user's directory; `checkpoint=.` and `checkpoint=`
    renamed the whole kind folder."""
    store = ArtifactStore(tmp_path / "outputs" / "artifacts")
    publish(store, "checkpoint", {"n": 1}, {})
    publish(store, "model", {"n": 1}, {})
    user = tmp_path / "my" / "data"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "my")
    before = tree(tmp_path)
    for ref in (str(user), "data", "data/", str(store.root / "checkpoint"), str(store.root), str(tmp_path)):
        with pytest.raises(PercontrastError, match=r"is not a checkpoint artifact: no manifest.json$"):
            store.resolve("checkpoint", ref, also=("model",))
        assert store.find("model", ref) is None  # not an id: never looked up inside the store
    for ref in (".", "", "./", " "):
        with pytest.raises(PercontrastError, match="does not name a checkpoint artifact"):
            store.resolve("checkpoint", ref)
        assert store.find("checkpoint", ref) is None
    assert tree(tmp_path) == before


def test_move_aside_refuses_anything_but_its_own_id_directories(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    artifact = publish(store, "eval", {"n": 1}, {})
    (store.root / "eval" / "notes").mkdir()
    before = tree(tmp_path)
    for path in (store.root / "eval", store.root, tmp_path, store.root / "eval" / "notes", artifact.path):
        kind = "checkpoint" if path == artifact.path else "eval"  # an id dir of another kind is not ours
        with pytest.raises(PercontrastError, match="is not a"):
            store.move_aside(kind, path, "test")
    assert tree(tmp_path) == before


# --- Content hashes ------------------------------------------------------------------------------------


def safetensors_artifact(store, values):
    import torch
    from safetensors.torch import save_file

    artifact_id = artifact_id_of("checkpoint", {"values": str(values)}, {})
    with store.create("checkpoint", artifact_id, {}, {}) as (tmp, _):
        (tmp / "model").mkdir()
        save_file({"w": torch.tensor(values, dtype=torch.float32)}, tmp / "model" / "model.safetensors")
    return store.find("checkpoint", artifact_id)


def overwrite(path, offset, data):
    """Bytes overwritten in place, size and modification time kept (only the ctime tells)."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def test_same_size_corruption_is_found_by_the_content_hash(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = publish(store, "eval", {"n": 1}, {})
    overwrite(artifact.path / "payload.txt", 0, b"y")
    with pytest.raises(PercontrastError) as error:
        store.find("eval", artifact.id)
    message = str(error.value)
    assert f"{artifact.path / 'payload.txt'} changed since it was written" in message
    assert f"delete {artifact.path} and rerun" in message and "\n" not in message
    assert (artifact.path / "payload.txt").read_text() == "y"  # reported, not touched


@pytest.mark.parametrize(
    ("offset", "data", "problem"),
    [
        (8, b"[broken", "its safetensors header is corrupt"),
        (-4, b"\x00\x00\xc0\x7f", "tensor 'w' holds NaN or infinite values"),  # float32 NaN, the last value
    ],
)
def test_a_damaged_weights_file_names_the_file_and_what_is_wrong(tmp_path, offset, data, problem):
    store = ArtifactStore(tmp_path)
    artifact = safetensors_artifact(store, [1.0, 2.0, 3.0])
    weights = artifact.path / "model" / "model.safetensors"
    overwrite(weights, offset if offset >= 0 else weights.stat().st_size + offset, data)
    with pytest.raises(PercontrastError, match=f"{weights} changed since it was written .*: {problem}"):
        store.resolve("checkpoint", artifact.id)


def test_non_finite_weights_are_never_published(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(PercontrastError, match="not written: model/model.safetensors: tensor 'w' holds NaN"):
        safetensors_artifact(store, [1.0, float("nan")])
    assert list((tmp_path / "checkpoint").iterdir()) == []  # no artifact, no temp dir


def test_verification_is_cached_by_file_identity_not_rehashed(tmp_path, monkeypatch):
    from percontrast_cli.store import integrity

    store = ArtifactStore(tmp_path)
    artifact = publish(store, "eval", {"n": 1}, {})
    hashed = []
    real_hash = integrity.file_hash
    monkeypatch.setattr(integrity, "file_hash", lambda path: hashed.append(path.name) or real_hash(path))
    monkeypatch.setattr(integrity, "_MEMO", {})  # a new process: only the cache file remembers
    assert ArtifactStore(tmp_path).find("eval", artifact.id) is not None
    assert hashed == []  # verified at publish, cached in <store>/.verified/
    os.utime(artifact.path / "payload.txt")  # any change of the file's identity: hashed again
    assert ArtifactStore(tmp_path).find("eval", artifact.id) is not None
    assert hashed == ["payload.txt"]
    assert ArtifactStore(tmp_path).find("eval", artifact.id) is not None
    assert hashed == ["payload.txt"]


# --- latest ----------------------------------------------------------------------------------------------


def test_latest_names_every_newer_artifact_it_passes_over(tmp_path, capsys):
    store = ArtifactStore(tmp_path)
    good = publish(store, "checkpoint", {"n": 1}, {})
    damaged = publish(store, "checkpoint", {"n": 2}, {})
    (damaged.path / "payload.txt").write_text("longer")
    leftover = tmp_path / "checkpoint" / artifact_id_of("checkpoint", {"n": 3}, {})
    leftover.mkdir()
    writing = tmp_path / "checkpoint" / f".tmp-{'a' * 12}-{_host()}-{os.getpid()}-cafecafe"
    writing.mkdir()
    capsys.readouterr()
    assert store.resolve("checkpoint", "latest").id == good.id
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines on the console
    assert f"passed over the newer {damaged.id}" in err and "payload.txt has 6 bytes" in err
    assert f"passed over the newer {leftover.name}" in err and "no manifest.json" in err
    assert f"still being written by process {os.getpid()}" in err
    assert leftover.is_dir()  # latest only reads


@pytest.mark.parametrize("copied", ["renamed", "other kind"])
def test_an_artifact_that_is_not_what_its_place_says_is_one_line_and_touches_nothing(
    tmp_path, capsys, copied
):
    """A manifest whose id is not its directory's name (an edited or copied artifact), or whose kind is not
    its folder's, is refused on every read path (find, by id, by path, latest), naming both."""
    store = ArtifactStore(tmp_path)
    if copied == "renamed":
        original = publish(store, "checkpoint", {"n": 1}, {})
        place = tmp_path / "checkpoint" / artifact_id_of("checkpoint", {"n": 2}, {})
        named = [repr(original.id), repr(place.name)]
    else:
        original = publish(store, "eval", {"n": 1}, {})
        place = tmp_path / "checkpoint" / original.id
        named = ["kind 'eval'", "'checkpoint' folder"]
    shutil.copytree(original.path, place)
    before = tree(tmp_path)
    for read in (
        lambda: store.find("checkpoint", place.name),
        lambda: store.resolve("checkpoint", place.name),
        lambda: store.resolve("checkpoint", str(place)),
    ):
        with pytest.raises(PercontrastError) as caught:
            read()
        message = str(caught.value)
        assert "\n" not in message and str(place) in message
        assert all(name in message for name in named), message
    capsys.readouterr()
    if copied == "renamed":  # latest passes the copy over, naming both, and takes the original
        assert store.resolve("checkpoint", "latest").path == original.path
        said = capsys.readouterr().err
    else:
        with pytest.raises(PercontrastError, match="no usable checkpoint artifact") as caught:
            store.resolve("checkpoint", "latest")
        said = str(caught.value)
    assert all(name in " ".join(said.split()) for name in named), said
    assert tree(tmp_path) == before


def test_latest_with_nothing_usable_is_one_error_naming_why(tmp_path):
    store = ArtifactStore(tmp_path)
    damaged = publish(store, "checkpoint", {"n": 1}, {})
    (damaged.path / "payload.txt").unlink()
    with pytest.raises(PercontrastError, match=f"no usable checkpoint artifact .*passed over {damaged.id}: "):
        store.resolve("checkpoint", "latest")
    with pytest.raises(PercontrastError, match="no eval artifact exists yet under"):
        store.resolve("eval", "latest")


# --- File-system faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
        (OSError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system"),
        # safetensors (Rust) reports the OS error as text only
        (
            RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
            "No space",
        ),
    ],
)
def test_a_write_fault_is_one_line_naming_the_path_and_nothing_half_written_stays(tmp_path, fault, cause):
    store = ArtifactStore(tmp_path)
    kept = publish(store, "checkpoint", {"n": 1}, {})
    artifact_id = artifact_id_of("checkpoint", {"n": 2}, {})
    with (
        pytest.raises(PercontrastError) as error,
        store.create("checkpoint", artifact_id, {}, {}) as (tmp, _),
    ):
        (tmp / "half.bin").write_bytes(b"x" * 100)
        raise fault
    message = str(error.value)
    assert message.startswith(f"cannot write checkpoint artifact {artifact_id}: {tmp_path / 'checkpoint'}")
    assert cause in message and "\n" not in message
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [kept.id]  # temp dir removed
    assert store.find("checkpoint", kept.id) is not None  # nothing lost
    assert publish(store, "checkpoint", {"n": 2}, {}).id == artifact_id  # the rerun writes it


def test_a_store_that_cannot_take_an_artifact_says_so_before_the_work(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    kept = publish(store, "eval", {"n": 1}, {})

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/somewhere/.tmp-probe-x")

    monkeypatch.setattr("percontrast_cli.store.artifacts.tempfile.mkstemp", read_only)
    assert store.claim("eval", kept.id) is not None  # what it holds it still serves
    with pytest.raises(PercontrastError, match=f"{tmp_path / 'eval'}: Read-only file system; point"):
        store.claim("eval", artifact_id_of("eval", {"n": 2}, {}))
    monkeypatch.undo()
    monkeypatch.setattr(
        "percontrast_cli.store.artifacts.shutil.disk_usage",
        lambda path: shutil._ntuple_diskusage(10, 10, 4096),
    )
    with pytest.raises(
        PercontrastError, match=r"No space left on device \(only 4096 bytes free\); free space"
    ):
        store.claim("eval", artifact_id_of("eval", {"n": 2}, {}))
    assert store.find("eval", kept.id) is not None


def test_published_files_follow_the_umask_so_a_group_shared_store_is_readable(tmp_path):
    """Weights came out 0600 (safetensors writes through a private temp file): a store shared by a group
    could not be read by it."""
    store = ArtifactStore(tmp_path)
    old = os.umask(0o007)  # a group-shared store's umask
    try:
        artifact_id = Identity("checkpoint", {"n": 1}, {}).id
        with store.create("checkpoint", artifact_id, {}, {}) as (tmp, _):
            (tmp / "model").mkdir()
            weights = tmp / "model" / "weights.bin"
            weights.write_bytes(b"w")
            weights.chmod(0o600)
    finally:
        os.umask(old)
    published = tmp_path / "checkpoint" / artifact_id
    assert (published / "model" / "weights.bin").stat().st_mode & 0o777 == 0o660
    assert (published / "manifest.json").stat().st_mode & 0o777 == 0o660
    assert published.stat().st_mode & 0o777 == (published / "model").stat().st_mode & 0o777 == 0o770
    assert store.find("checkpoint", artifact_id) is not None


def test_a_manifest_records_the_machine_and_the_id_does_not_depend_on_it(tmp_path, monkeypatch):
    import torch

    from percontrast_cli.runtime import machine

    first = publish(ArtifactStore(tmp_path / "a"), "checkpoint", {"n": 1}, {})
    record = first.manifest["machine"]
    assert record["cpu"] == machine.cpu_description() and record["threads"] == torch.get_num_threads()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert record["gpus"] == (gpus if torch.cuda.is_available() else [])
    monkeypatch.setattr(machine, "cpu_description", lambda: "Other CPU; bf16: slow")
    second = publish(ArtifactStore(tmp_path / "b"), "checkpoint", {"n": 1}, {})
    assert second.id == first.id and second.manifest["machine"]["cpu"] == "Other CPU; bf16: slow"
