"""SlidePatches and PatchFolder as PyTorch datasets; feature files."""

import numpy as np
import pytest
from PIL import Image

import patchtcga
from patchtcga.data import IMAGENET_MEAN, IMAGENET_STD, Shard

torch = pytest.importorskip("torch")


def test_slide_patches_default_to_the_tissue_grid(sample, pyramid):
    data = patchtcga.SlidePatches([sample, pyramid], mpp=0.5, size=96)
    grids = [patchtcga.Slide(p).tissue_grid(0.5, 96) for p in (sample, pyramid)]
    assert len(data) == sum(len(g) for g in grids)
    image, where = data[len(grids[0]) + 3]
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    x, y = grids[1][3]
    assert list(where) == [1, x, y]
    assert (image == patchtcga.Slide(pyramid).read_patches(np.array([[x, y]]), 0.5, 96)[0]).all()


def test_dataloader_with_workers_gives_the_direct_reads(sample, pyramid):
    data = patchtcga.SlidePatches([sample, pyramid], mpp=1.0, size=64)
    loader = torch.utils.data.DataLoader(data, batch_size=16, num_workers=2)
    images, wheres = zip(*[(b[0], b[1]) for b in loader])
    images, wheres = torch.cat(images).numpy(), torch.cat(wheres).numpy()
    assert (wheres == data.index).all()
    for k, path in enumerate((sample, pyramid)):
        rows = data.index[:, 0] == k
        direct = patchtcga.Slide(path).read_patches(data.index[rows, 1:], 1.0, 64)
        assert (images[rows] == direct).all()


def test_normalized_patches_are_chw_standardised(sample):
    coords = [np.array([[900, 224], [1200, 800]])]
    raw = patchtcga.SlidePatches([sample], mpp=0.5, size=32, coords=coords)
    norm = patchtcga.SlidePatches([sample], mpp=0.5, size=32, coords=coords, normalized=True)
    image, _ = raw[1]
    tensor, _ = norm[1]
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32
    expected = ((image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    assert np.abs(tensor - expected).max() < 1e-5
    assert torch.from_numpy(tensor).data_ptr() == tensor.ctypes.data  # no copy


@pytest.fixture(scope="module")
def ptcga(tmp_path_factory):
    """A small PTCGA200-layout folder: two organs, three patches each."""
    root = tmp_path_factory.mktemp("PTCGA200")
    rng = np.random.default_rng(3)
    for organ in ("lung", "skin"):
        (root / organ).mkdir()
        for k in range(3):
            pixels = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / organ / f"TCGA-{organ}-{k}_{k * 96}_0.jpg", quality=95)
    return root


def test_patch_folder_reads_the_layout_with_a_recipe(ptcga):
    data = patchtcga.PatchFolder(ptcga, recipe="eval", size=64)
    assert len(data) == 6 and data.native.layout == "ptcga200"
    assert sorted(set(data.native.label_names)) == ["lung", "skin"]
    view, label = data[4]
    assert view.shape == (3, 64, 64) and view.dtype == np.float32
    assert label == data.labels[4]
    raw, _ = patchtcga.PatchFolder(ptcga, recipe="eval", size=64, normalized=False)[4]
    assert raw.shape == (64, 64, 3) and raw.dtype == np.uint8
    assert np.abs(view - ((raw / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)).max() < 1e-5


def test_augmented_views_depend_on_seed_epoch_and_index_only(ptcga):
    a = patchtcga.PatchFolder(ptcga, recipe="simclr", size=48, seed=5)
    b = patchtcga.PatchFolder(ptcga, recipe="simclr", size=48, seed=5)
    views, _ = a[2]
    assert len(views) == 2 and not np.array_equal(views[0], views[1])
    assert all(np.array_equal(u, v) for u, v in zip(views, b[2][0]))
    a.set_epoch(1)
    assert not np.array_equal(a[2][0][0], views[0])
    loaded = [v for batch in torch.utils.data.DataLoader(b, batch_size=3, num_workers=2) for v in batch[0][0]]
    assert all(np.array_equal(loaded[i].numpy(), b[i][0][0]) for i in range(len(b)))


def test_shards_split_ranks_disjointly(ptcga):
    data = patchtcga.PatchFolder(ptcga, recipe="eval", size=32)
    shares = [Shard(data, rank=r, world_size=2, shuffle=True, seed=1).indices() for r in range(2)]
    assert sorted(np.concatenate(shares)) == list(range(6)) and len(shares[0]) == 3


def test_bad_dataset_arguments(ptcga, tmp_path):
    with pytest.raises(ValueError, match="unknown recipe"):
        patchtcga.PatchFolder(ptcga, recipe="fancy")
    with pytest.raises(ValueError, match="not a dataset folder"):
        patchtcga.PatchFolder(tmp_path / "absent")
    with pytest.raises(IndexError):
        patchtcga.PatchFolder(ptcga)[6]


def test_read_features(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "slide.h5"
    with h5py.File(path, "w") as f:
        f["features"] = np.arange(12, dtype=np.float32).reshape(3, 4)
        f["coords"] = np.array([[0, 0], [224, 0], [0, 224]], np.int64)
        f.attrs["mpp"] = 0.5
        f.attrs["model"] = "resnet50"
    features = patchtcga.read_features(path)
    assert features.features.shape == (3, 4) and features.coords[1].tolist() == [224, 0]
    assert features.attrs == {"mpp": 0.5, "model": "resnet50"}
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="no features or coords"):
        patchtcga.read_features(tmp_path / "other.h5")


def test_patch_folder_reads_the_original_pcam_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (5, 96, 96, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "valid_x.h5", "w") as f:
        f["x"] = images
    with h5py.File(tmp_path / "valid_y.h5", "w") as f:
        f["y"] = np.array([0, 1, 1, 0, 1], np.uint8).reshape(5, 1, 1, 1)
    data = patchtcga.PatchFolder(tmp_path, recipe="none", size=96, layout="pcam", split="valid", normalized=False)
    assert len(data) == 5 and data.labels.tolist() == [0, 1, 1, 0, 1]
    assert data.native.label_names[1] == "tumor"
    view, label = data[2]
    assert (view == images[2]).all() and label == 1
    with pytest.raises(ValueError, match="needs split"):
        patchtcga.PatchFolder(tmp_path, layout="pcam")


def test_stain_normalisers_fit_apply_and_travel(sample):
    slide = patchtcga.Slide(sample)
    grid = slide.tissue_grid(0.5, 128)
    target, source = slide.read_patches(grid[[2, len(grid) // 2]], 0.5, 128)
    for method in ("macenko", "reinhard", "vahadane"):
        norm = patchtcga.StainNormalizer(method, target)
        out = norm(source)
        assert out.shape == source.shape and not np.array_equal(out, source)
        assert np.abs(out.astype(float).mean((0, 1)) - target.mean((0, 1))).max() < np.abs(
            source.astype(float).mean((0, 1)) - target.mean((0, 1))
        ).max()  # closer to the target's colour than before
        again = patchtcga.StainNormalizer.from_json(norm.to_json())
        assert np.array_equal(again(source), out)
        stained = patchtcga.SlidePatches([sample], 0.5, 128, coords=[grid[[len(grid) // 2]]], stain=norm)
        assert np.array_equal(stained[0][0], out)
    with pytest.raises(ValueError, match="too little stain"):
        patchtcga.StainNormalizer("macenko", np.full((64, 64, 3), 250, np.uint8))
    with pytest.raises(ValueError, match="unknown stain method"):
        patchtcga.StainNormalizer("spams", target)
