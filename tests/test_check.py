import json
import os
import shutil

import cv2
import numpy as np
import pytest

from pbn.config import Config
from pbn.data import check, readers
from pbn.data.records import DataError

from .conftest import LSP_JSON, SAMPLES, run_cli

JPEGS = sorted(SAMPLES.glob("*.jpg"))
PEOPLE = json.loads((SAMPLES / "test_mpii.json").read_text())  # HRNet format, one person per sample image


def mpii_root(tmp_path, train_copies=4, valid=None, name="root"):
    """<root>/mpii with the 5 real sample images, train.json = the 5 people repeated, valid.json = them once."""
    root = tmp_path / name
    (root / "mpii" / "images").mkdir(parents=True)
    (root / "mpii" / "annotations").mkdir()
    for f in JPEGS:
        shutil.copy(f, root / "mpii" / "images" / f.name)
    write_ann(root, "train", PEOPLE * train_copies)
    write_ann(root, "valid", PEOPLE if valid is None else valid)
    return root


def write_ann(root, split, people):
    (root / "mpii" / "annotations" / f"{split}.json").write_text(json.dumps(people))


def with_image(people, image):
    return [*people, {**people[0], "image": image}]


def cfg(root, data="mpii", **kw):
    return Config(data=data, data_root=str(root), **kw)


def bad_lines(stdout):
    """The bad-file lines of the command's output (all but the summary line)."""
    lines = stdout.strip().splitlines()
    return lines[:-1], lines[-1]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`python -m pbn.data.check <argv>` in-process: (exit code, stdout, stderr). test_real_images_pass runs the
    real subprocess."""
    code = check.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_real_images_pass(tmp_path):
    """The subprocess smoke test of `python -m pbn.data.check`; the other CLI tests call main() in-process."""
    root = mpii_root(tmp_path)
    report = check.check_data(cfg(root, batch_size=16))
    assert report.bad == [] and report.ok
    assert report.counts == {"train": 20, "valid": 5} and report.images == 5
    r = run_cli("pbn.data.check", "--data", "mpii", "--data-root", str(root))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"mpii under {root}: train 20 people, valid 5 people; 5 image(s) checked (5 cached) in ")
    assert r.stdout.strip().splitlines() == [r.stdout.strip()] and r.stdout.strip().endswith(" s: all good")


def test_truncated_jpeg_that_opencv_might_decode_is_bad():
    data = JPEGS[0].read_bytes()
    assert check.image_problem(data) is None
    assert data[-2:] == b"\xff\xd9"
    # cut right before the end-of-image marker: every scan is complete, libjpeg decodes it with a warning only
    assert check.image_problem(data[:-2]) == "truncated JPEG (no end-of-image marker)"
    assert check.image_problem(data[: len(data) // 2]) == "truncated JPEG (no end-of-image marker)"
    assert check.image_problem(data[:100]) == "truncated JPEG (ends before its image data)"
    assert check.image_problem(data + b"\0" * 10) is None  # bytes after the end-of-image marker are harmless
    assert check.image_problem(b"") == "empty file"
    assert check.image_problem(b"GIF89a but not really") == "not an image (OpenCV cannot decode it)"


def test_jpeg_with_exif_thumbnail_is_judged_by_the_main_image():
    """An APP1 segment holding a complete thumbnail (its own FF DA ... FF D9) must not make a main image cut
    inside its headers look complete: the header walk skips the segment by its length."""
    data = JPEGS[1].read_bytes()
    thumb = JPEGS[3].read_bytes()[:2] + b"\xff\xda" + b"\x00" * 8 + b"\xff\xd9"
    app1 = b"\xff\xe1" + (len(thumb) + 2 + 6).to_bytes(2, "big") + b"Exif\0\0" + thumb
    with_thumb = data[:2] + app1 + data[2:]
    assert check.image_problem(with_thumb) is None
    assert check.image_problem(with_thumb[:-2]) == "truncated JPEG (no end-of-image marker)"
    cut = with_thumb[: 2 + len(app1) + 40]  # the thumbnail's markers are all there, the main image's scan is not
    assert cut.rfind(b"\xff\xda") < cut.rfind(b"\xff\xd9")
    assert check.image_problem(cut) == "truncated JPEG (ends before its image data)"


def test_every_bad_image_is_listed_once(tmp_path, capsys):
    root = mpii_root(tmp_path)
    images = root / "mpii" / "images"
    full = JPEGS[0].read_bytes()
    (images / JPEGS[0].name).write_bytes(full[: len(full) * 2 // 3])  # truncated
    (images / "notes.jpg").write_text("these are not pixels\n")  # not an image
    (images / "empty.jpg").write_bytes(b"")
    png = cv2.imencode(".png", cv2.imread(str(JPEGS[2])))[1].tobytes()
    (images / "good.png").write_bytes(png)
    (images / "cut.png").write_bytes(png[: len(png) // 2])
    os.symlink(images / "gone.jpg", images / "dangling.jpg")
    extra = ["notes.jpg", "empty.jpg", "good.png", "cut.png", "dangling.jpg", "missing.jpg"]
    train = PEOPLE * 4
    for name in extra:
        train = with_image(train, name)
    write_ann(root, "train", train)
    write_ann(root, "valid", with_image(PEOPLE, "notes.jpg"))  # shared with train: listed once
    expected = {
        str(images / JPEGS[0].name): "truncated JPEG (no end-of-image marker)",
        str(images / "notes.jpg"): "not an image (OpenCV cannot decode it)",
        str(images / "empty.jpg"): "empty file",
        str(images / "cut.png"): "truncated PNG (no IEND chunk)",
        str(images / "dangling.jpg"): "image not found (broken symbolic link)",
        str(images / "missing.jpg"): "image not found",
    }
    report = check.check_data(cfg(root))
    assert dict(report.bad) == expected and len(report.bad) == len(expected)
    assert report.images == 5 + len(extra) and not report.ok

    code, stdout, stderr = cli(capsys, "--data", "mpii", "--data-root", root, "--jobs", "2")
    assert code == 2 and stderr == ""
    lines, summary = bad_lines(stdout)
    assert sorted(lines) == sorted(f"{p}: {why}" for p, why in expected.items())
    assert "6 bad file(s)" in summary and "11 image(s) checked" in summary


def test_malformed_annotations_one_message_per_file(tmp_path, capsys):
    root = mpii_root(tmp_path)
    ann = root / "mpii" / "annotations"
    write_ann(root, "train", [*PEOPLE[:3], {**PEOPLE[3], "scale": "big"}, PEOPLE[4]])
    (ann / "valid.json").write_text('[{"image": "a.jpg",')
    code, stdout, stderr = cli(capsys, "--data", "mpii", "--data-root", root)
    assert code == 2 and stderr == ""
    lines, summary = bad_lines(stdout)
    assert len(lines) == 2 and "2 bad file(s)" in summary
    assert lines[0] == f"{ann / 'train.json'}: entry 3 field 'scale': expected a positive number, got the string 'big'"
    assert lines[1].startswith(f"{ann / 'valid.json'}: not valid JSON")


def test_bad_auxiliary_files_do_not_hide_the_json(tmp_path):
    """A bad valid.h5 stops mpii_split before it reads valid.json; valid.json is still checked on its own."""
    root = mpii_root(tmp_path, valid=[{**PEOPLE[0], "center": None}])
    ann = root / "mpii" / "annotations"
    (ann / "valid.h5").write_bytes(b"not hdf5")
    (ann / "gt_valid.mat").write_text("not a mat file")
    report = check.check_data(cfg(root))
    paths = [p for p, _ in report.bad]
    assert paths == [str(ann / "valid.h5"), str(ann / "gt_valid.mat"), str(ann / "valid.json")]
    assert report.bad[2][1] == "entry 0 field 'center': expected 2 numbers, got null"
    assert report.bad[0][1].startswith("not a readable HDF5 file") and "valid" not in report.counts


def test_problems_are_blamed_on_the_file_the_reader_names(tmp_path):
    """The (path, reason) of a bad file come from DataError's attributes, whichever file the reader names: here
    valid.h5 lists other people than valid.json (the cross-file check inside readers.mpii_split)."""
    import h5py

    root = mpii_root(tmp_path)
    ann = root / "mpii" / "annotations"
    with h5py.File(ann / "valid.h5", "w") as f:
        f["imgname"] = np.array([b"other.jpg"] * len(PEOPLE))
        f["visible"] = np.ones((len(PEOPLE), 16))
    report = check.check_data(cfg(root))
    assert report.bad == [(str(ann / "valid.h5"), f"person 0 is other.jpg but {ann / 'valid.json'} has "
                                                  f"{PEOPLE[0]['image']}; the files must list the same people")]
    assert report.counts == {"train": 20}  # the valid split is unreadable: no count, no image checks for it


def test_check_and_training_read_the_same_records(tmp_path, monkeypatch):
    """check_data takes each split from readers.split_records, the function load_source trains on."""
    from pbn.data.dataset import load_source

    calls = []
    real = readers.split_records

    def spy(data, root, split, problems=None):
        records = real(data, root, split, problems)
        calls.append((data, str(root), split, None if records is None else [r.image for r in records]))
        return records

    monkeypatch.setattr(readers, "split_records", spy)
    root = mpii_root(tmp_path)
    check.check_data(cfg(root))
    checked = list(calls)
    calls.clear()
    load_source(cfg(root), "train")
    with pytest.raises(DataError, match="needs head boxes"):  # read first; the sample root has no gt_valid.mat
        load_source(cfg(root), "valid")
    assert checked == calls and [c[2] for c in calls] == ["train", "valid"] and len(calls[0][3]) == 20


def test_split_sizes_against_the_batch(tmp_path):
    root = mpii_root(tmp_path, train_copies=3, valid=[])
    report = check.check_data(cfg(root, batch_size=16))
    ann = root / "mpii" / "annotations"
    assert report.bad == [
        (str(ann / "train.json"), "the train split holds 15 people: fewer than one batch of 16 (the training "
                                  "loader drops the last partial batch)"),
        (str(ann / "valid.json"), "the valid split holds 0 people: nothing to validate on"),
    ]
    write_ann(root, "valid", PEOPLE)
    assert check.check_data(cfg(root, batch_size=15)).ok
    limited = check.check_data(cfg(root, batch_size=8, train_limit=5, val_limit=2))
    assert limited.counts == {"train": 5, "valid": 2}
    assert limited.bad == [(str(ann / "train.json"), "the train split holds 5 people with train_limit=5: fewer "
                                                     "than one batch of 8 (the training loader drops the last "
                                                     "partial batch)")]


def test_limits_restrict_the_images_checked(tmp_path):
    root = mpii_root(tmp_path)
    write_ann(root, "train", with_image(PEOPLE * 4, "missing.jpg"))
    assert not check.check_data(cfg(root)).ok
    report = check.check_data(cfg(root, train_limit=20))
    assert report.ok and report.counts["train"] == 20


def test_cache_second_run_and_changed_files(tmp_path):
    root = mpii_root(tmp_path)
    cache_file = check._cache_file("mpii", root)
    assert not cache_file.exists()
    first = check.check_data(cfg(root))
    assert first.ok and first.cached == 0 and cache_file.exists()
    entries = json.loads(cache_file.read_text())["entries"]
    assert len(entries) == 5 and all(v[2] is None for v in entries.values())
    second = check.check_data(cfg(root))
    assert second.ok and second.cached == 5
    victim = root / "mpii" / "images" / JPEGS[1].name
    victim.write_bytes(JPEGS[1].read_bytes()[:-2])  # size changes: checked again
    third = check.check_data(cfg(root))
    assert third.cached == 4 and third.bad == [(str(victim), "truncated JPEG (no end-of-image marker)")]
    fourth = check.check_data(cfg(root))  # the bad verdict is cached too
    assert fourth.cached == 5 and fourth.bad == third.bad
    cache_file.write_text("{ damaged")  # a damaged cache is ignored and rewritten
    fifth = check.check_data(cfg(root))
    assert fifth.cached == 0 and fifth.bad == third.bad and json.loads(cache_file.read_text())["entries"]
    assert not [p for p in cache_file.parent.iterdir() if p.name.endswith(".tmp")]  # no temporaries left


def test_no_cache_reads_and_writes_nothing(tmp_path, capsys):
    root = mpii_root(tmp_path)
    report = check.check_data(cfg(root), use_cache=False)
    assert report.ok and report.cached == 0 and not check._cache_file("mpii", root).exists()
    code, stdout, _ = cli(capsys, "--data", "mpii", "--data-root", root, "--no-cache")
    assert code == 0 and "(0 cached)" in stdout and not check._cache_file("mpii", root).exists()
    assert check.check_data(cfg(root)).cached == 0  # a cache is written now ...
    cache = check._cache_file("mpii", root)
    before = cache.read_bytes()
    (root / "mpii" / "images" / JPEGS[0].name).write_bytes(b"")  # ... and would be rewritten by a cached run
    code, stdout, _ = cli(capsys, "--data", "mpii", "--data-root", root, "--no-cache")
    assert code == 2 and "(0 cached)" in stdout and "empty file" in stdout  # not read: 0 cached ...
    assert cache.read_bytes() == before  # ... and not written


def test_unwritable_cache_is_a_logged_warning(tmp_path, monkeypatch, caplog):
    root = mpii_root(tmp_path)
    (tmp_path / "not_a_dir").write_text("")
    monkeypatch.setenv("PBN_CACHE", str(tmp_path / "not_a_dir"))
    with caplog.at_level("WARNING", logger="pbn.data.check"):
        report = check.check_data(cfg(root))
    assert report.ok and report.cached == 0
    assert [(r.name, r.levelname) for r in caplog.records] == [("pbn.data.check", "WARNING")]
    assert caplog.records[0].getMessage().startswith("data check cache not written (")


def test_threads_and_processes_agree(tmp_path):
    root = mpii_root(tmp_path)
    (root / "mpii" / "images" / JPEGS[2].name).write_bytes(JPEGS[2].read_bytes()[:5000])
    a = check.check_data(cfg(root), jobs=2, use_cache=False, executor="thread")
    b = check.check_data(cfg(root), jobs=2, use_cache=False, executor="process")
    assert a.bad == b.bad and len(a.bad) == 1 and a.images == b.images == 5


def test_require_valid_data(tmp_path):
    assert check.require_valid_data(Config()) is None  # synthetic: nothing to check
    synthetic = check.check_data(Config())
    assert synthetic.ok and synthetic.images == 0 and synthetic.counts == {}
    root = mpii_root(tmp_path)
    assert check.require_valid_data(cfg(root)) is None
    images = root / "mpii" / "images"
    for f in JPEGS[:4]:
        (images / f.name).write_bytes(f.read_bytes()[:3000])
    with pytest.raises(DataError) as e:
        check.require_valid_data(cfg(root, batch_size=8))
    msg = str(e.value)
    first = next(e["image"] for e in PEOPLE if e["image"] in {f.name for f in JPEGS[:4]})  # in annotation order
    assert msg.startswith(f"4 bad file(s) under {root} (first: {images / first}: truncated JPEG")
    assert msg.count("truncated JPEG") == 3 and ", ...);" in msg
    assert msg.endswith(f"run `python -m pbn.data.check --data mpii --data-root {root} --batch-size 8` for the "
                        "full list")


def test_missing_root_and_missing_image_directory(tmp_path, capsys):
    code, stdout, _ = cli(capsys, "--data", "mpii", "--data-root", tmp_path / "nowhere")
    assert code == 2 and stdout.startswith(f"{tmp_path / 'nowhere'}: data root directory not found\n")
    root = mpii_root(tmp_path)
    shutil.rmtree(root / "mpii" / "images")
    report = check.check_data(cfg(root))
    assert report.bad[0] == (str(root / "mpii" / "images"), "MPII image directory not found (see docs/data.md)")
    assert len(report.bad) == 1  # both JSON files are still read, and are fine


def lsp_root(tmp_path, n=2000, ext=False):
    """<root>/lsp/joints.mat (3 x 14 x n from the real LSP labels) with images for 1-20 and 1001-1005 only."""
    import scipy.io

    doc = json.loads(LSP_JSON.read_text())["observer_centric"]
    xy = np.array([e["joints"] for e in doc] * (n // len(doc) + 1))[:n]
    joints = np.concatenate([xy.transpose(2, 1, 0), np.zeros((1, 14, n))], 0)
    root = tmp_path / "lsp_root"
    (root / "lsp" / "images").mkdir(parents=True)
    scipy.io.savemat(root / "lsp" / "joints.mat", {"joints": joints})
    for i in [*range(1, 21), *range(1001, 1006)]:
        os.symlink(JPEGS[i % len(JPEGS)], root / "lsp" / "images" / f"im{i:04d}.jpg")
    if ext:
        (root / "lsp_ext").mkdir()
        scipy.io.savemat(root / "lsp_ext" / "joints.mat", {"joints": joints[:, :, :30].transpose(1, 0, 2)})
    return root


def test_lsp_splits_limits_and_missing_images(tmp_path):
    root = lsp_root(tmp_path)
    ok = check.check_data(cfg(root, "lsp", train_limit=20, val_limit=5))
    assert ok.ok and ok.counts == {"train": 20, "valid": 5} and ok.images == 25
    full = check.check_data(cfg(root, "lsp"))
    assert full.counts == {"train": 1000, "valid": 1000} and len(full.bad) == 2000 - 25
    assert all(why == "image not found" for _, why in full.bad)
    assert str(root / "lsp" / "images" / "im2000.jpg") in dict(full.bad)


def test_lsp_short_joints_and_missing_extended_images(tmp_path):
    root = lsp_root(tmp_path, n=1000, ext=True)
    report = check.check_data(cfg(root, "lsp", train_limit=20))
    assert report.counts == {"train": 20, "valid": 0}
    assert report.bad == [
        (str(root / "lsp" / "joints.mat"), "the valid split holds 0 people (LSP's test split, images 1001-2000 of "
                                           "1000): nothing to validate on"),
    ]
    report = check.check_data(cfg(root, "lsp", train_limit=1030, val_limit=1))
    assert (str(root / "lsp_ext" / "images"), "image directory not found (30 referenced image(s) in it)") in report.bad
    assert len([p for p, _ in report.bad if "lsp_ext" in p]) == 1


def test_lsp_bad_joints_file_is_one_line(tmp_path, capsys):
    import scipy.io

    root = lsp_root(tmp_path)
    scipy.io.savemat(root / "lsp" / "joints.mat", {"joints": np.array(["x"])})
    code, stdout, stderr = cli(capsys, "--data", "lsp", "--data-root", root)
    lines, summary = bad_lines(stdout)
    assert code == 2 and stderr == ""
    assert lines == [f"{root / 'lsp' / 'joints.mat'}: 'joints' must be 3x14xN (LSP) or 14x3xN (LSP-extended), got "
                     "an array of shape (1,) and type <U1"]
    assert "1 bad file(s)" in summary
