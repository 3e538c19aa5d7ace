"""Drone-format reader checklist, grouping, training samples and metrics (checked against scikit-learn)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from PIL import Image

from aerialdata.classes import SOURCE_ID, load_class_table
from aerialdata.drone import DroneDataset, read_rgb_scaled
from aerialdata.images import read_mask
from aerialdata.sources import IGNORE, SourceSpec, open_source
from segcap.errors import DataError, DatasetNotFoundError
from segmentation.data import (
    EvalDataset,
    MixedCropDataset,
    ScaledCropDataset,
    crops_per_image_for,
    pad_collate,
    source_split,
    split_by_file,
)
from segmentation.metrics import IGNORE_INDEX, ConfusionMatrix, block_share
from segmentation.train import JudgedMatrix, build_loss, evaluate

DRONE = Path(__file__).parent / "data" / "drone"
LOVEDA = Path(__file__).parent / "data" / "loveda"


@pytest.fixture
def drone_copy(tmp_path) -> Path:
    root = tmp_path / "drone"
    shutil.copytree(DRONE, root, ignore=shutil.ignore_patterns("data.py"))
    return root


# ---------------------------------------------------------------- reader checklist
def test_item_and_length():
    ds = DroneDataset(DRONE, "seed10")
    assert len(ds) == 6
    assert ds.stems == [f"{i:03d}" for i in range(6)]
    image, mask = ds[0]
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert mask.max() < ds.table.num_classes


def test_grouping_maps_source_ids():
    ds = DroneDataset(DRONE, "seed10")
    source = read_mask(ds.mask_paths[0])
    _, mask = ds[0]
    table = ds.table
    for src in ("grass", "paved-area", "roof", "water", "car", "tree", "wall"):
        sel = source == SOURCE_ID[src]
        if sel.any():
            assert (mask[sel] == table.group_of(src)).all(), src
    # roof is artificial surface in seed10, building in aerial10
    aerial = DroneDataset(DRONE, "aerial10")
    roof = source == SOURCE_ID["roof"]
    assert roof.any()
    assert (mask[roof] == table.names.index("artificial surface")).all()
    assert (aerial[0][1][roof] == aerial.table.names.index("building")).all()


def test_scaled_load_keeps_image_and_mask_aligned():
    ds = DroneDataset(DRONE)
    image, mask = ds.load(2, scale=0.5)
    assert image.shape == (24, 32, 3) and mask.shape == (24, 32)
    full_image, full_mask = ds.load(2)
    assert mask[12, 16] == full_mask[24, 32] or mask[12, 16] in np.unique(full_mask[22:27, 30:35])
    assert read_rgb_scaled(ds.image_paths[2], 0.25).shape == (12, 16, 3)


def test_missing_root_names_root_and_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="synthetic.generate") as e:
        DroneDataset(tmp_path / "nowhere")
    assert "nowhere" in str(e.value)
    (tmp_path / "d" / "original_images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="label_images_semantic"):
        DroneDataset(tmp_path / "d")


def test_image_without_mask(drone_copy):
    (drone_copy / "label_images_semantic" / "003.png").unlink()
    with pytest.raises(DataError, match="003.jpg"):
        DroneDataset(drone_copy)


def test_corrupt_image_names_file(drone_copy):
    (drone_copy / "original_images" / "001.jpg").write_bytes(b"not a jpeg")
    ds = DroneDataset(drone_copy)
    with pytest.raises(DataError, match="001.jpg"):
        ds[1]
    ds[0]  # the others still load


def test_corrupt_mask_names_file(drone_copy):
    (drone_copy / "label_images_semantic" / "002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="002.png"):
        DroneDataset(drone_copy)[2]


def test_size_mismatch(drone_copy):
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(drone_copy / "label_images_semantic" / "004.png")
    with pytest.raises(DataError, match=r"004.png.*10x10.*64x48"):
        DroneDataset(drone_copy)[4]


def test_bad_ids(drone_copy):
    mask = np.full((48, 64), 3, np.uint8)
    mask[5, 5] = 40
    Image.fromarray(mask, mode="L").save(drone_copy / "label_images_semantic" / "005.png")
    with pytest.raises(DataError, match=r"005.png.*\[40\]"):
        DroneDataset(drone_copy)[5]


def test_colour_mask_rejected(drone_copy):
    Image.new("RGB", (64, 48)).save(drone_copy / "label_images_semantic" / "000.png")
    with pytest.raises(DataError, match="single-channel"):
        DroneDataset(drone_copy)[0]


def test_class_dict_mismatch(drone_copy):
    (drone_copy / "class_dict_seg.csv").write_text("name,r,g,b\nbackground,0,0,0\ngrass,0,102,0\n")
    with pytest.raises(DataError, match="class_dict_seg.csv"):
        DroneDataset(drone_copy)


# ---------------------------------------------------------------- training / eval samples
def test_scaled_crops_and_augmentation():
    ds = DroneDataset(DRONE)
    train = ScaledCropDataset(ds, [0, 1, 2], crop_size=32, target_scale=0.5, scale_jitter=1.25, crops_per_image=2,
                              seed=0)
    assert len(train) == 6
    scales = [train.draw_scale() for _ in range(200)]
    assert 0.5 / 1.25 - 1e-9 <= min(scales) < 0.45 and 0.55 < max(scales) <= 0.5 * 1.25 + 1e-9
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.int64
    valid = y[y != 255]
    assert valid.numel() > 0 and valid.max() < 10
    # scaled to 0.5 then cropped: the 48x64 image becomes 24x32, so the crop is padded with ignored rows
    assert (y == 255).any()


def test_crops_depend_on_seed_and_epoch_only():
    ds = DroneDataset(DRONE)

    def crops(epoch, before=0):
        train = ScaledCropDataset(ds, [0, 1, 2], crop_size=32, target_scale=0.5, seed=3)
        for _ in range(before):  # epochs drawn earlier do not change what this epoch draws
            train[0]
        train.set_epoch(epoch)
        return torch.stack([train[k][0] for k in range(len(train))])

    assert torch.equal(crops(2), crops(2, before=3))
    assert not torch.equal(crops(2), crops(3))


def test_eval_collate_pads_to_32():
    ds = DroneDataset(DRONE)
    ev = EvalDataset(ds, [0, 1], scale=None)
    x, y, idx = pad_collate([ev[0], ev[1]])
    assert x.shape == (2, 3, 64, 64) and y.shape == (2, 64, 64)
    assert (y[:, 48:] == 255).all() and (y[:, :48] != 255).all()
    assert idx.tolist() == [0, 1]


def test_split_is_seeded_by_file_and_disjoint():
    stems = [f"{i}" for i in range(10)]
    tr, va = split_by_file(stems, 0.2, seed=1)
    assert len(va) == 2 and sorted(tr + va) == list(range(10))
    assert split_by_file(stems, 0.2, seed=1) == (tr, va)
    assert split_by_file(stems, 0.2, seed=2) != (tr, va)
    assert len(split_by_file(stems[:2], 0.01, 0)[1]) == 1


# ---------------------------------------------------------------- several sources
def test_source_split_published_or_by_file():
    loveda = open_source(SourceSpec("loveda", LOVEDA), "seed10")
    assert loveda.splits is not None and "val" in loveda.splits
    train, val = source_split(loveda, val_fraction=0.2, seed=0)
    assert [loveda.splits[i] for i in train] == ["train"] * len(train) and len(train) == 3
    assert [loveda.splits[i] for i in val] == ["val", "val"]
    assert source_split(loveda, val_fraction=0.5, seed=7) == (train, val)  # the published split wins
    drone = DroneDataset(DRONE)  # no published split: val_fraction by file, as the one-drone-set form does
    assert source_split(drone, 0.2, seed=0) == split_by_file(drone.stems, 0.2, 0)
    tr, va = source_split(drone, 0.2, seed=0, limit=4)
    assert sorted(tr + va) == [0, 1, 2, 3] and len(va) == 1


class _Sized:
    """A stand-in source of n images of one size."""

    def __init__(self, n: int, size: tuple[int, int]):
        self.n, self._size = n, size

    def size(self, i: int) -> tuple[int, int]:
        return self._size


def test_crops_per_image_balance_sources_by_area():
    # a 1024x1024 LoveDA tile at 0.3 holds about 10 crops of 96 px; a 480x320 drone photo at 0.25 about 1
    assert crops_per_image_for(_Sized(5, (1024, 1024)), list(range(5)), 0.3, 96, 1) == 10
    assert crops_per_image_for(_Sized(5, (480, 320)), list(range(5)), 0.25, 96, 1) == 1
    assert crops_per_image_for(_Sized(5, (480, 320)), list(range(5)), 0.25, 96, 3) == 3  # per crop-sized area
    assert crops_per_image_for(_Sized(5, (64, 48)), list(range(5)), 0.5, 32, 1) == 1  # never below one


def test_mixed_crops_reach_every_source_and_reseed_per_epoch():
    drone, loveda = DroneDataset(DRONE), open_source(SourceSpec("loveda", LOVEDA), "seed10")

    def mixed():
        return MixedCropDataset([
            ScaledCropDataset(drone, [0, 1], crop_size=32, target_scale=0.5, seed=3),
            ScaledCropDataset(loveda, [0, 1, 2], crop_size=32, target_scale=1.0, crops_per_image=2, seed=3,
                              stream=1)])

    ds = mixed()
    assert len(ds) == 2 + 6
    ds.set_epoch(1)
    xs = [ds[k][0] for k in range(len(ds))]
    again = mixed()
    again.set_epoch(1)
    assert all(torch.equal(a, again[k][0]) for k, a in enumerate(xs))  # seed and epoch alone decide the crops
    again.set_epoch(2)
    assert not torch.equal(xs[3], again[3][0])
    # stream 0 draws what a lone dataset draws (the one-drone-set form's crops are unchanged); stream 1 differs
    lone = ScaledCropDataset(drone, [0, 1], crop_size=32, target_scale=0.5, seed=3)
    lone.set_epoch(1)
    assert torch.equal(lone[0][0], xs[0])
    other = ScaledCropDataset(drone, [0, 1], crop_size=32, target_scale=0.5, seed=3, stream=1)
    other.set_epoch(1)
    assert [round(other.draw_scale(), 6) for _ in range(3)] != [round(lone.draw_scale(), 6) for _ in range(3)]
    # LoveDA's no-data and background are IGNORE in its crops, never a class id
    y = torch.stack([ds[k][1] for k in range(2, len(ds))])
    assert (y == IGNORE).any() and y[y != IGNORE].max() < 10


# ---------------------------------------------------------------- IGNORE: no loss, no metric
@pytest.mark.parametrize("kind", ["ce", "ce+dice"])
def test_ignored_pixels_count_in_no_loss(kind):
    assert IGNORE == IGNORE_INDEX == 255
    loss_fn = build_loss(kind)
    torch.manual_seed(0)
    logits = torch.randn(2, 10, 8, 8, requires_grad=True)
    target = torch.randint(0, 10, (2, 8, 8))
    target[0, :3] = IGNORE  # a source's no-data, and a whole image it cannot label
    target[1] = IGNORE
    target[1, 0, 0] = 4
    loss = loss_fn(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(grad)
    assert torch.isfinite(loss) and (grad[ignored] == 0).all() and (grad[~ignored] != 0).any()
    changed = logits.detach().clone()
    changed[ignored] = 1e3 * torch.randn(int(ignored.sum()))  # whatever the model says there
    assert loss_fn(changed, target).item() == pytest.approx(loss.item(), rel=1e-6)
    # a crop entirely out of what its source labels: loss 0 and zero gradients, never NaN
    none = loss_fn(logits, torch.full_like(target, IGNORE))
    (grad,) = torch.autograd.grad(none, logits)
    assert none.item() == 0 and (grad == 0).all()


def test_ignored_pixels_count_in_no_metric():
    truth = np.array([[0, 1, IGNORE], [IGNORE, 1, 2]])
    pred = np.array([[0, 1, 9], [9, 2, 2]])  # class 9 predicted only where nothing is labelled
    cm = ConfusionMatrix(10).update(pred, truth)
    assert cm.total == 4 and cm.matrix[:, 9].sum() == 0
    assert np.isnan(cm.iou()[9]) and "c9" not in cm.summary([f"c{i}" for i in range(10)])["classes_in_mean"]
    # the same through the training's own evaluation (one batch of logits standing in for images)
    AcceleratorState._reset_state(reset_partial_state=True)
    logits = F.one_hot(torch.from_numpy(pred), 10).permute(2, 0, 1).float()[None] * 10
    ev, _ = evaluate(torch.nn.Identity(), [(logits, torch.from_numpy(truth)[None], torch.tensor([0]))], 10,
                     Accelerator(cpu=True))
    np.testing.assert_array_equal(ev.matrix, cm.matrix)


def test_classes_are_judged_only_where_labelled():
    # source A labels classes 0-2; source B labels 0-1 only (class 2 is IGNORE in its masks: a car on its road)
    a = ConfusionMatrix(3).update(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2]))
    b = ConfusionMatrix(3).update(np.array([0, 2, 2, 1]), np.array([0, 1, 1, 1]))
    judged = JudgedMatrix([a, b], [(0, 1, 2), (0, 1)], 3)
    iou = judged.iou()
    assert iou[2] == 1.0  # B's class-2 predictions are not false positives of class 2: B cannot label it...
    assert iou[1] == pytest.approx(2 / 4)  # ...but they are misses of the class B does label
    assert iou[0] == 1.0
    only_b = JudgedMatrix([b], [(0, 1)], 3)
    assert np.isnan(only_b.iou()[2]) and only_b.miou == pytest.approx((1 + 1 / 3) / 2)
    # with every class labelled, it is the plain IoU
    plain = ConfusionMatrix(3).merge(a).merge(b)
    np.testing.assert_array_equal(JudgedMatrix([a, b], [(0, 1, 2)] * 2, 3).iou(), plain.iou())


# ---------------------------------------------------------------- metrics vs scikit-learn
def test_metrics_agree_with_sklearn():
    from sklearn.metrics import confusion_matrix, jaccard_score

    rng = np.random.default_rng(0)
    n = 6
    truth = rng.integers(0, n - 1, (4, 20, 30))  # class 5 never in truth...
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, n - 2, truth.shape))  # ...nor predicted
    truth[0, 0, :5] = 255  # ignored padding
    cm = ConfusionMatrix(n)
    cm.update(pred[:2], truth[:2])
    cm.update(torch.from_numpy(pred[2:]), torch.from_numpy(truth[2:]))  # numpy and torch paths accumulate alike
    keep = truth != 255
    t, p = truth[keep], pred[keep]
    ref = confusion_matrix(t, p, labels=list(range(n)))
    np.testing.assert_array_equal(cm.matrix, ref)
    assert cm.pixel_accuracy == pytest.approx((t == p).mean())
    present = sorted(set(t) | set(p))
    ref_iou = jaccard_score(t, p, labels=present, average=None)
    np.testing.assert_allclose(cm.iou()[present], ref_iou)
    assert np.isnan(cm.iou()[5])  # absent from both: excluded from the mean
    assert cm.miou == pytest.approx(jaccard_score(t, p, labels=present, average="macro"))
    norm = cm.normalised()
    np.testing.assert_allclose(norm[:5].sum(1), 1.0)
    assert (norm[5] == 0).all()
    names = [f"c{i}" for i in range(n)]
    s = cm.summary(names)
    assert s["per_class_iou"]["c5"] is None and "c5" not in s["classes_in_mean"]
    assert s["miou"] == pytest.approx(cm.miou, abs=1e-5)


def test_training_evaluation_counts_what_sklearn_counts():
    """segmentation.train.evaluate, the code training measures with, agrees with scikit-learn on the same pixels."""
    from sklearn.metrics import confusion_matrix, jaccard_score

    rng = np.random.default_rng(1)
    n = 5
    logits = torch.from_numpy(rng.normal(size=(6, n, 8, 12))).float()
    truth = torch.from_numpy(rng.integers(0, n, (6, 8, 12)))
    truth[0, :2] = IGNORE_INDEX  # padding rows
    batches = [(logits[i : i + 2], truth[i : i + 2], torch.arange(i, i + 2)) for i in range(0, 6, 2)]
    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh single-process CPU set-up, as training makes
    acc = Accelerator(cpu=True)
    cm, loss = evaluate(torch.nn.Identity(), batches, n, acc)  # the "images" are the logits themselves
    keep = (truth != IGNORE_INDEX).numpy()
    t, p = truth.numpy()[keep], logits.argmax(1).numpy()[keep]
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(t, p, labels=list(range(n))))
    assert cm.miou == pytest.approx(jaccard_score(t, p, labels=sorted(set(t) | set(p)), average="macro"))
    assert loss == pytest.approx(F.cross_entropy(logits, truth, ignore_index=IGNORE_INDEX).item(), rel=1e-6)


def test_block_share_tells_resolvable_from_one_pixel_classes():

    m = np.zeros((20, 20), np.uint8)  # class 0: background
    m[2:12, 2:12] = 1  # a 10x10 block: every pixel in a 2x2 block
    m[15, :] = 2  # a one-pixel line: none
    m[17:19, 0:10] = 3  # a two-pixel band (a car from far): all of it
    m[0, 19] = 255  # ignored padding counts for no class
    m[13, 17] = 1  # one isolated pixel of class 1: 100 of its 101 pixels are in blocks
    share = block_share([m], 5)
    assert share[1] == pytest.approx(100 / 101)
    assert share[2] == 0 and share[3] == 1.0
    assert np.isnan(share[4])  # absent
    assert block_share([np.ones((1, 5), np.uint8)], 2)[1] == 1.0  # the image border does not thin a class


def test_metrics_reject_bad_ids():
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(np.array([0, 3]), np.array([0, 1]))


def test_aerial10_table_loads():
    assert load_class_table("aerial10").num_classes == 10
