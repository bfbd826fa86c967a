import shutil

import pytest
import torch

from labsupport import pretrained
from labsupport.pretrained import CheckpointError


def test_every_shipped_checkpoint_matches_its_hash_and_loads():
    entries = pretrained.manifest()
    assert "classifier" in entries
    for name, entry in entries.items():
        assert pretrained.sha256(pretrained.path_of(name)) == entry["sha256"]
        model = pretrained.load(name)
        assert not model.training
        assert entry["bytes"] < 5_000_000, f"{name} is too big to ship"


def test_weights_only_loading_is_used(monkeypatch):
    seen = {}
    real = torch.load

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    pretrained.load("classifier")
    assert seen.get("weights_only") is True


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    bad = tmp_path / "classifier.pt"
    good = pretrained.path_of("classifier").read_bytes()
    if damage == "truncate":
        bad.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not a checkpoint at all")
    else:
        bad.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")  # a pickle that would run a command
    with pytest.raises(CheckpointError) as info:
        pretrained.load("classifier", path=bad)
    assert str(bad) in str(info.value) and "python -m labsupport.pretrained train classifier" in str(info.value)


def test_tampered_shipped_file_fails_hash(tmp_path, monkeypatch):
    fake_dir = tmp_path / "ck"
    shutil.copytree(pretrained.DIR, fake_dir)
    monkeypatch.setattr(pretrained, "DIR", fake_dir)
    monkeypatch.setattr(pretrained, "MANIFEST", fake_dir / "manifest.json")
    f = fake_dir / "classifier.pt"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        pretrained.load("classifier")
    f.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        pretrained.load("classifier")


def test_wrong_architecture_is_clear(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="does not fit"):
        pretrained.load("classifier", path=bad)


def test_unknown_name():
    with pytest.raises(KeyError, match="Known"):
        pretrained.load("nope")


# --- every shipped checkpoint (vae, vae2d, cgan, ... as they appear), not only the classifier ---


@pytest.mark.parametrize("name", sorted(pretrained.manifest()))
@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_each_corrupted_shipped_checkpoint_gives_clear_error(tmp_path, monkeypatch, name, damage):
    fake_dir = tmp_path / "ck"
    shutil.copytree(pretrained.DIR, fake_dir)
    monkeypatch.setattr(pretrained, "DIR", fake_dir)
    monkeypatch.setattr(pretrained, "MANIFEST", fake_dir / "manifest.json")
    f = pretrained.path_of(name)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3] if damage == "truncate" else data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    for load in (lambda: pretrained.load(name), lambda: pretrained.load_or_train(name, device="cpu")):
        with pytest.raises(CheckpointError) as info:  # load_or_train must not silently retrain over a damaged file
            load()
        assert str(f) in str(info.value) and f"python -m labsupport.pretrained train {name}" in str(info.value)
    # Without the hash check (a file passed by path), the damage is still reported clearly, never as an unpickling traceback.
    if damage == "truncate":
        elsewhere = tmp_path / f"{name}_copy.pt"
        shutil.copy(f, elsewhere)
        with pytest.raises(CheckpointError, match="could not be read"):
            pretrained.load(name, path=elsewhere)


def test_every_registered_model_is_shipped_with_hash_and_metrics():
    entries = pretrained.manifest()
    missing = [name for name in pretrained.REGISTRY if name not in entries or not pretrained.path_of(name).exists()]
    assert not missing, f"registered but not shipped: {missing}; run python -m labsupport.pretrained train {' '.join(missing)}"
    for name, entry in entries.items():
        assert len(entry["sha256"]) == 64 and entry["metrics"], f"{name}: manifest entry lacks its hash or metrics"
