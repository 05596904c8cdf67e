import cv2
import numpy as np
import pytest
import torch

from pbn.data import readers, transforms
from pbn.heatmaps import HeatmapCodec
from pbn.skeleton import MISSING, MPII_FLIP_PAIRS, VISIBLE

from .conftest import SAMPLES


@pytest.mark.parametrize("rotation,flip,scale", [(0, False, 1.0), (25, False, 0.8), (-30, True, 1.2)])
def test_real_images_crop_and_inverse_transform(rotation, flip, scale):
    records = readers.read_mpii_json(SAMPLES / "test_mpii.json", SAMPLES)
    assert len(records) == 5
    for r in records:
        img = cv2.imread(r.image)
        assert img is not None and img.ndim == 3
        m = transforms.crop_matrix(r.centre, r.scale * scale, rotation, 256, flip)
        crop = transforms.warp(img, m, 256)
        assert crop.shape == (256, 256, 3) and crop.std() > 10  # real content, not border
        ann = r.annotated
        in_crop = transforms.apply_affine(r.joints[ann, :2], m)
        assert (np.abs(in_crop - 127.5) < 200).all()  # the person is in (or near) the crop
        back = transforms.apply_affine(in_crop, transforms.invert_affine(m))
        assert np.abs(back - r.joints[ann, :2]).max() < 1e-6
        # The crop really shows what the original showed at those points (bilinear: a few levels).
        p = np.round(in_crop[0]).astype(int)
        if 2 <= p.min() and p.max() < 254:
            q = transforms.apply_affine(p[None].astype(float), transforms.invert_affine(m))[0]
            orig_px = cv2.getRectSubPix(img, (1, 1), tuple(q.astype(np.float32)))[0, 0].astype(float)
            assert np.abs(crop[p[1], p[0]].astype(float) - orig_px).max() < 40


def test_centre_maps_to_crop_centre_and_flip_mirrors():
    m = transforms.crop_matrix([300.0, 200.0], 1.0, 0, 256)
    assert transforms.apply_affine(np.array([[300.0, 200.0]]), m)[0] == pytest.approx([127.5, 127.5])
    mf = transforms.crop_matrix([300.0, 200.0], 1.0, 0, 256, flip=True)
    p = np.array([[310.0, 190.0]])
    assert transforms.apply_affine(p, mf)[0, 0] == pytest.approx(255 - transforms.apply_affine(p, m)[0, 0])


def test_codec_round_trip_within_half_pixel():
    codec = HeatmapCodec(256, sigma=1.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        joints = np.column_stack([rng.uniform(4, 250, (16, 2)), np.full(16, VISIBLE)])
        hm, w = codec.encode(joints)
        assert hm.shape == (16, 64, 64) and (w == 1).all()
        coords, maxval = codec.decode(torch.from_numpy(hm)[None])
        err = np.abs(coords[0].numpy() - codec.to_heatmap(joints[:, :2]))
        assert err.max() <= 0.5
        # the peak sample is at most half a heatmap pixel from the joint on each axis: >= exp(-(0.5^2 + 0.5^2) / 2)
        assert maxval.min() >= np.exp(-0.25) - 1e-6 and maxval.max() <= 1.0


def test_codec_weights_zero_missing_and_outside():
    codec = HeatmapCodec(128)
    corners = [[10, 10, VISIBLE], [10, 10, MISSING], [-20, 50, VISIBLE], [140, 3, VISIBLE]]
    joints = np.array(corners + [[64, 64, VISIBLE]] * 12, dtype=np.float32)
    hm, w = codec.encode(joints)
    assert w[:4].tolist() == [1, 0, 0, 0]
    assert hm[1:4].max() == 0


def test_flip_merge_of_a_mirrored_prediction_is_exact():
    codec = HeatmapCodec(128)
    rng = np.random.default_rng(1)
    joints = np.column_stack([rng.uniform(8, 120, (16, 2)), np.full(16, VISIBLE)])
    hm = torch.from_numpy(codec.encode(joints)[0])[None]
    mirrored = joints.copy()
    mirrored[:, 0] = 127 - mirrored[:, 0]
    mirrored = transforms.flip_joints(mirrored, MPII_FLIP_PAIRS)
    hm_flip = torch.from_numpy(codec.encode(mirrored)[0])[None]
    merged = codec.flip_merge(hm, hm_flip, MPII_FLIP_PAIRS)
    assert torch.allclose(merged, hm, atol=1e-6)


def test_augmentation_ranges_and_jitter():
    rng = np.random.default_rng(0)
    draws = [transforms.sample_augmentation(rng, 0.25, 30, True) for _ in range(500)]
    s, r, f = map(np.array, zip(*draws))
    assert s.min() >= 0.75 and s.max() <= 1.25 and np.abs(r).max() <= 30 and 0.35 < f.mean() < 0.65
    img = np.full((8, 8, 3), 100, np.uint8)
    out = transforms.color_jitter(img, rng, 0.2)
    assert out.dtype == np.uint8 and 80 <= out.min() and out.max() <= 120 and not (out == img).all()


def test_reduced_jpeg_decode_gives_the_same_crop():
    """Decoding at 1/r and composing the warp with the reduced->original map matches the full decode."""
    from pbn.data.dataset import _file_loader, decode_reduction, reduced_matrix

    records = readers.read_mpii_json(SAMPLES / "test_mpii.json", SAMPLES)
    load = _file_loader(records)
    used = set()
    for i, r in enumerate(records):
        for size in (64, 256):
            m = transforms.crop_matrix(r.centre, r.scale, 10, size)
            red = decode_reduction(m, 8)
            used.add(red)
            full = transforms.warp(load(i, 1), m, size).astype(float)
            errors = {}
            for dx in (-1.0, -0.5, 0.0, 0.5, 1.0):  # crop pixels
                shifted = reduced_matrix(m, red) + np.array([[0, 0, dx], [0, 0, dx]])
                errors[dx] = np.abs(full - transforms.warp(load(i, red), shifted, size)).mean()
            # aligned: no sub-pixel shift matches the full decode better. The residual is the full-size
            # path's aliasing (bilinear sampling 1 pixel in ~14, no prefilter), which r=8 avoids.
            assert min(errors, key=errors.get) == 0.0, (i, size, red, errors)
            assert errors[0.0] < 12, (i, size, red, errors)
    assert {2, 4, 8} & used  # the MPII frames really are decoded reduced
    assert decode_reduction(transforms.crop_matrix([0, 0], 1.0, 0, 256), 8) == 1  # 200 px -> 256: full size
