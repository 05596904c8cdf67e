import subprocess
import sys

import numpy as np
import pytest

from pbn.data import synthetic
from pbn.data.synthetic import SyntheticPoses
from pbn.groups import records_mi, resolve_groups
from pbn.skeleton import MISSING, OCCLUDED, VISIBLE, J

from .conftest import KAGGLE_CSV, run_cli

CODE = ("import hashlib,sys; from pbn.data.synthetic import SyntheticPoses as S; d=S(7,'train',96,6); "
        "h=hashlib.sha1(); [h.update(d.load_image(i).tobytes()) or h.update(d.records[i].joints.tobytes()) "
        "for i in range(6)]; print(h.hexdigest())")
BADGE = np.array([0, 230, 255])


def _bare(d: SyntheticPoses, i: int, **changes) -> np.ndarray:
    """Image i rendered without its occluders (and with `changes` to its scene)."""
    scene = synthetic.Scene(**{**d.scenes[i].__dict__, "occluders": [], **changes})
    return synthetic.render(scene, d.seed, d.split, i, d.size)


def test_same_sample_in_every_process():
    digests = {subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
               for _ in range(2)}
    assert len(digests) == 1
    d = SyntheticPoses(7, "train", 96, 6)
    assert (d.load_image(3) == d.load_image(3)).all()
    assert not (d.load_image(3) == SyntheticPoses(8, "train", 96, 6).load_image(3)).all()
    assert not np.allclose(d.records[0].joints, SyntheticPoses(7, "valid", 96, 1).records[0].joints)


def test_records_are_well_formed_with_occluded_joints():
    d = SyntheticPoses(0, "train", 128, 200)
    flags = np.stack([r.joints[:, 2] for r in d.records])
    assert set(np.unique(flags)) <= {MISSING, OCCLUDED, VISIBLE}
    assert 0.05 < (flags == OCCLUDED).mean() < 0.4
    for r in d.records[:20]:
        assert r.head_size > 0 and r.scale > 0
        vis = r.joints[:, 2] != MISSING
        assert ((r.joints[vis, :2] >= 0) & (r.joints[vis, :2] < 128)).all()


def test_images_place_the_poses_of_their_split_pool():
    """Image i shows pool pose perm[i mod P], unrotated: joints = centre + pose * 200 scale, MISSING where the
    MPII pose has no joint; each pool pose once before any repeats."""
    train, valid = synthetic.pool_records("train"), synthetic.pool_records("valid")
    assert (len(train), len(valid)) == (12649, 2000)
    for split, pool in (("train", train), ("valid", valid)):
        d = SyntheticPoses(4, split, 96, 50)
        for i, (r, scene) in enumerate(zip(d.records, d.scenes)):
            pose = pool[synthetic.pose_index(4, split, i)].joints
            present = pose[:, 2] != MISSING
            assert np.allclose(r.joints[present, :2], r.centre + pose[present, :2] * 200 * r.scale, atol=1e-3)
            assert (r.joints[~present, 2] == MISSING).all() and (scene.present == present).all()
            assert 0.55 <= scene.height / 96 <= 0.85 and r.scale == pytest.approx(1.25 * scene.height / 200)
    order = [synthetic.pose_index(4, "valid", i) for i in range(2000)]
    assert sorted(order) == list(range(2000))
    assert synthetic.pose_index(4, "valid", 2000 + 17) == order[17]
    assert [synthetic.pose_index(5, "valid", i) for i in range(20)] != order[:20]


def test_mi_of_the_training_pool_gives_mpiis_grouping():
    """The poses the synthetic data stands for group like MPII's: exactly the shipped MPII grouping."""
    mi = records_mi(SyntheticPoses(0, "train", 64, 1).pose_records)
    for k in (5, 6):
        assert resolve_groups("mi", k, mi=mi) == resolve_groups("mi", k), k


def test_occluded_joints_really_are_covered():
    """Pixels at occluded joints differ from a render of the same scene without occluders."""
    d = SyntheticPoses(3, "train", 128, 40)
    changed = []
    for i, scene in enumerate(d.scenes):
        occ = np.flatnonzero(scene.flags == OCCLUDED)
        if len(occ) == 0:
            continue
        a, b = d.load_image(i).astype(int), _bare(d, i).astype(int)
        for j in occ:
            x, y = np.round(scene.joints[j]).astype(int)
            changed.append(np.abs(a[y, x] - b[y, x]).sum() > 0)
    assert len(changed) > 5 and np.mean(changed) > 0.9


def test_joints_missing_from_the_pose_are_not_drawn():
    """Moving a missing joint onto the figure changes no pixel: no limb or head reaches it."""
    d = SyntheticPoses(0, "train", 96, 60)
    tried = 0
    for i, scene in enumerate(d.scenes):
        missing = ~scene.present
        if not missing.any():
            continue
        moved = scene.joints.copy()
        moved[missing] = scene.centre
        assert np.array_equal(_bare(d, i, joints=moved), _bare(d, i)), i
        tried += 1
    assert tried >= 10


def test_left_right_is_decidable_from_the_badge():
    """People face every way (MPII poses), and the badge sits on the left chest computed from the left joints,
    not on the right chest."""
    d = SyntheticPoses(0, "train", 128, 300)
    left, right, facing = [], [], []
    for i, r in enumerate(d.records):
        j = r.joints
        if (j[[J["thorax"], J["l_shoulder"], J["l_hip"], J["r_shoulder"], J["r_hip"]], 2] == MISSING).any():
            continue
        lc = 0.55 * j[J["thorax"], :2] + 0.25 * j[J["l_shoulder"], :2] + 0.2 * j[J["l_hip"], :2]
        rc = 0.55 * j[J["thorax"], :2] + 0.25 * j[J["r_shoulder"], :2] + 0.2 * j[J["r_hip"], :2]
        if not ((lc >= 0) & (lc <= 127) & (rc >= 0) & (rc <= 127)).all():
            continue
        img = _bare(d, i).astype(int)
        left.append(np.abs(img[round(lc[1]), round(lc[0])] - BADGE).sum() <= 3)
        if np.linalg.norm(lc - rc) > 0.06 * d.scenes[i].height + 2:  # the badges' discs do not touch
            right.append(np.abs(img[round(rc[1]), round(rc[0])] - BADGE).sum() <= 3)
        spine = j[J["thorax"], :2] - j[J["pelvis"], :2]
        across = j[J["l_shoulder"], :2] - j[J["r_shoulder"], :2]
        facing.append(spine[0] * across[1] - spine[1] * across[0] > 0)  # left shoulder on the image right
    assert len(left) > 200 and all(left)
    assert len(right) > 40 and not any(right)
    assert 0.1 < np.mean(facing) < 0.9  # both ways: the badge, not the facing, tells left from right


def test_render_cache_is_bounded_read_only_and_changes_nothing():
    image_bytes = 64 * 64 * 3
    cached = SyntheticPoses(5, "train", 64, 6, cache_bytes=4 * image_bytes)
    plain = SyntheticPoses(5, "train", 64, 6)
    for _ in range(2):
        for i in range(6):
            assert np.array_equal(cached.load_image(i), plain.load_image(i))
    assert len(cached._rendered) == 4 and not plain._rendered  # the budget holds 4 images, not 6
    assert cached.load_image(0) is cached.load_image(0)
    with pytest.raises(ValueError, match="read-only"):
        cached.load_image(0)[0, 0] = 0  # an in-place edit would corrupt every later epoch


def test_shipped_pose_asset_is_rebuilt_from_the_mpii_export(tmp_path):
    out = tmp_path / "poses.npz"
    r = run_cli("pbn.data.synthetic", "--build-asset", str(KAGGLE_CSV), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "14649 poses" in r.stdout
    assert synthetic.POSE_ASSET.stat().st_size < 1 << 20
    with np.load(out) as new, np.load(synthetic.POSE_ASSET) as shipped:
        assert set(new.files) == set(shipped.files) == {"xy", "missing", "units"}
        for key in new.files:
            assert np.array_equal(new[key], shipped[key]), key
    r = run_cli("pbn.data.synthetic", "--build-asset", str(tmp_path / "nope.csv"), "--out", str(out))
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr
