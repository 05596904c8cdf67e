import subprocess
import sys

import numpy as np
import pytest

from pbn.data.synthetic import SyntheticPoses
from pbn.groups import records_mi
from pbn.skeleton import MISSING, OCCLUDED, VISIBLE, J

CODE = ("import hashlib,sys; from pbn.data.synthetic import SyntheticPoses as S; d=S(7,'train',96,6); "
        "h=hashlib.sha1(); [h.update(d.load_image(i).tobytes()) or h.update(d.records[i].joints.tobytes()) "
        "for i in range(6)]; print(h.hexdigest())")


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


def test_occluded_joints_really_are_covered():
    """Pixels at occluded joints differ from a render of the same scene without occluders."""
    from pbn.data import synthetic

    d = SyntheticPoses(3, "train", 128, 40)
    changed = []
    for i, scene in enumerate(d.scenes):
        occ = np.flatnonzero(scene.flags == OCCLUDED)
        if len(occ) == 0:
            continue
        bare = synthetic.Scene(**{**scene.__dict__, "occluders": []})
        a, b = d.load_image(i).astype(int), synthetic.render(bare, 3, "train", i, 128).astype(int)
        for j in occ:
            x, y = np.round(scene.joints[j]).astype(int)
            changed.append(np.abs(a[y, x] - b[y, x]).sum() > 0)
    assert len(changed) > 5 and np.mean(changed) > 0.9


def test_left_right_is_image_decidable_and_person_faces_camera():
    d = SyntheticPoses(0, "train", 128, 300)
    j = np.stack([r.joints[:, :2] for r in d.records])
    # Facing the camera: seen along the spine (pelvis -> thorax), the left shoulder is on the image right.
    # Image y points down, so that is a positive z component of spine x across.
    spine = j[:, J["thorax"]] - j[:, J["pelvis"]]
    across = j[:, J["l_shoulder"]] - j[:, J["r_shoulder"]]
    assert (spine[:, 0] * across[:, 1] - spine[:, 1] * across[:, 0] > 0).mean() > 0.95


def test_related_parts_are_correlated():
    """The kinematic model couples both legs: knee/ankle MI beats knee/wrist MI."""
    mi = records_mi(SyntheticPoses(0, "train", 128, 3000).records)
    assert mi[J["l_knee"], J["l_ankle"]] > mi[J["l_knee"], J["r_wrist"]]
    assert mi[J["l_knee"], J["r_knee"]] > mi[J["l_knee"], J["r_wrist"]]


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
