"""Per-modality embedders: an image space beside the text space, under the same bitemporal filters."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.errors import ConfigError, InvalidInputError, ModelMismatchError
from aether.spaces import space_of

from ._security_util import find_secret
from .conftest import DIM, T0, FakeClock


class TinyImageEmbedder:
    """A deterministic 'image' model for tests: an image is RGB bytes; its vector is the mean colour
    plus an 8-bin brightness histogram (so red images are near red images, blue near blue)."""

    def __init__(self, version: str = "1") -> None:
        self.identity = f"tiny-image-hist:{version}"
        self.dim = 11
        self.calls = 0

    def embed(self, payloads: Sequence[bytes]) -> np.ndarray:
        self.calls += len(payloads)
        out = []
        for b in payloads:
            px = np.frombuffer(b[: len(b) - len(b) % 3], np.uint8).reshape(-1, 3).astype(np.float32)
            mean = px.mean(axis=0) / 255.0
            hist = np.histogram(px.mean(axis=1), bins=8, range=(0, 256))[0] / len(px)
            out.append(np.concatenate([mean * 3, hist]) + 1e-3)
        return np.asarray(out, np.float32)


def image(rgb: tuple[int, int, int], seed: int, n: int = 400) -> bytes:
    rng = np.random.default_rng(seed)
    px = np.clip(np.asarray(rgb) + rng.integers(-20, 21, size=(n, 3)), 0, 255).astype(np.uint8)
    return px.tobytes()


RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 40)


def _open(path: Path | None, emb: TinyImageEmbedder, **kw: object) -> aether.Memory:
    return aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), embedders={"image": emb},  # type: ignore[arg-type]
                       **kw)


def test_image_queries_search_the_image_space_and_text_queries_the_text_space(tmp_path: Path) -> None:
    emb = TinyImageEmbedder()
    with _open(tmp_path / "s", emb) as mem:
        red = mem.add("a photo of a fire truck", payload=image(RED, 1), content_type="image/png")
        blue = mem.add("a photo of the sea", payload=image(BLUE, 2), content_type="image/png")
        green = mem.add("a photo of a lawn", payload=image(GREEN, 3), content_type="image/png")
        mem.add("fire truck maintenance notes")  # a text atom: not in the image space
        hits = mem.search_space("image", image(RED, 99), k=3)
        assert [h.atom_id for h in hits] == [red.atom_id, *[h.atom_id for h in hits[1:]]]
        assert {h.atom_id for h in hits} == {red.atom_id, blue.atom_id, green.atom_id}
        assert hits[0].score > hits[1].score
        vec = emb.embed([image(BLUE, 5)])[0]
        assert mem.search_space("image", vec, k=1)[0].atom_id == blue.atom_id
        # the text query searches captions (the text space), every modality included
        text_hits = mem.search("fire truck", k=2, mode="dense")
        assert red.atom_id in {h.atom_id for h in text_hits}
        with pytest.raises(InvalidInputError):
            mem.search_space("image", np.ones(DIM), k=1)  # a vector of the text space's size
        with pytest.raises(InvalidInputError):
            mem.search_space("audio", b"x", k=1)  # no embedder for audio
        calls = emb.calls
    with _open(tmp_path / "s", emb) as mem:  # persisted: nothing is embedded again at reopen
        assert emb.calls == calls
        assert mem.search_space("image", image(GREEN, 7), k=1)[0].atom_id == green.atom_id
    assert (tmp_path / "s" / "spaces" / "image" / "SPACE.json").exists()
    with pytest.raises(ModelMismatchError):
        _open(tmp_path / "s", TinyImageEmbedder("2"))


def test_image_space_obeys_valid_time_as_of_and_tags(tmp_path: Path) -> None:
    clock = FakeClock()
    with _open(tmp_path / "s", TinyImageEmbedder(), clock=clock) as mem:
        png = "image/png"
        old_red = mem.add("the old logo", payload=image(RED, 1), content_type=png, valid_from=T0,
                          valid_to=T0 + timedelta(days=30), tags={"kind": "logo"})
        new_blue = mem.add("the new logo", payload=image(BLUE, 2), content_type=png,
                           valid_from=T0 + timedelta(days=30), tags={"kind": "logo"})
        mem.add("a red car", payload=image(RED, 3), content_type=png, valid_from=T0, tags={"kind": "car"})
        q = image(RED, 50)
        at_jan = [h.atom_id for h in mem.search_space("image", q, k=5, valid_at=T0 + timedelta(days=1),
                                                       tags={"kind": "logo"})]
        assert at_jan == [old_red.atom_id]
        at_mar = [h.atom_id for h in mem.search_space("image", q, k=5, valid_at=T0 + timedelta(days=60),
                                                       tags={"kind": "logo"})]
        assert at_mar == [new_blue.atom_id]
        before = mem.last_commit
        # a correction replaces the new logo's picture; as_of before it still finds the old picture
        mem.correct(new_blue.atom_id, payload=image(GREEN, 4), content_type=png, valid_from=T0 + timedelta(days=30))
        now = mem.search_space("image", image(GREEN, 9), k=1, valid_at=T0 + timedelta(days=60),
                               tags={"kind": "logo"})[0]
        assert now.atom_id == new_blue.atom_id and now.score > 0.99
        then = mem.search_space("image", image(GREEN, 9), k=1, valid_at=T0 + timedelta(days=60),
                                as_of=before, tags={"kind": "logo"})[0]
        assert then.atom.payload_digest == hashlib.sha256(image(BLUE, 2)).hexdigest()
        ranged = mem.search_space("image", q, k=5, valid_during=(T0, T0 + timedelta(days=90)), tags={"kind": "logo"})
        assert len({h.atom_id for h in ranged}) == len(ranged)  # one hit per atom over a range


def test_erasure_removes_image_space_vectors_from_disk(tmp_path: Path) -> None:
    emb = TinyImageEmbedder()
    root = tmp_path / "s"
    pic = image(RED, 1)
    with _open(root, emb) as mem:
        a = mem.add("alice's portrait", payload=pic, content_type="image/png", subject="alice")
        b = mem.add("bob's portrait", payload=image(BLUE, 2), content_type="image/png", subject="bob")
        space = space_of(mem._engine, "image")
        needle = space.vecs[list(space.vids).index(a.version_id)].tobytes()  # the stored unit vector
        assert find_secret(root, [needle])  # the vector file holds the vector
        mem.erase(subject="alice")
        assert find_secret(root, [needle, pic[:64]]) == []
        assert [h.atom_id for h in mem.search_space("image", pic, k=5)] == [b.atom_id]
        mem.compact()
        assert [h.atom_id for h in mem.search_space("image", pic, k=5)] == [b.atom_id]
        assert mem.get(a.atom_id) is None


def test_torn_or_missing_vector_file_is_rebuilt_from_payloads(tmp_path: Path) -> None:
    emb = TinyImageEmbedder()
    root = tmp_path / "s"
    with _open(root, emb) as mem:
        ids = [mem.add(f"pic {i}", payload=image(c, i), content_type="image/png").atom_id
               for i, c in enumerate((RED, BLUE, GREEN))]
    f = root / "spaces" / "image" / "vectors.bin"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 7])  # a torn last record
    with _open(root, emb) as mem:
        assert mem.search_space("image", image(GREEN, 9), k=1)[0].atom_id == ids[2]
    f.unlink()
    with _open(root, emb) as mem:
        assert mem.search_space("image", image(BLUE, 9), k=1)[0].atom_id == ids[1]
    assert f.stat().st_size == len(data)


def test_encrypted_store_seals_the_space(tmp_path: Path) -> None:
    import os

    emb = TinyImageEmbedder()
    key = os.urandom(32)
    pic = image(RED, 1)
    with _open(tmp_path / "s", emb, key=key) as mem:
        a = mem.add("secret picture", payload=pic, content_type="image/png")
        needle = space_of(mem._engine, "image").vecs[0].tobytes()
        assert find_secret(tmp_path / "s", [needle, pic[:64]]) == []
        assert mem.search_space("image", pic, k=1)[0].atom_id == a.atom_id


def test_bad_embedders_are_config_errors(tmp_path: Path) -> None:
    for bad in ({"text": TinyImageEmbedder()}, {"smell": TinyImageEmbedder()}, {"image": object()}):
        with pytest.raises(ConfigError):
            aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM), embedders=bad)  # type: ignore[arg-type]
    with aether.open(None, embedder=aether.HashingEmbedder(dim=DIM), embedders={"image": TinyImageEmbedder()}) as mem:
        a = mem.add("in memory", payload=image(RED, 1), content_type="image/png")
        assert mem.search_space("image", image(RED, 2), k=1)[0].atom_id == a.atom_id
