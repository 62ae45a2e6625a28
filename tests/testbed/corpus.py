#!/usr/bin/python3
"""Real-world DICOM files for the edge-case tests: pydicom's corpus, re-identified.

    corpus.py build OUT_DIR [--profile FILE]
        Copies a chosen set of pydicom's test files (every transfer syntax the
        backup must carry untouched, a truncated file, a big-endian file, a
        deflated file, a SOP Class UID encoded with VR UN) into OUT_DIR. Every copy
        gets a fresh SOP Instance UID, and all of them one patient (RTBCORPUS) and
        one study with a series per SOP class, so a study- or series-level retrieve
        mixes transfer syntaxes the way a real archive does. Writes OUT_DIR/index.tsv
        (file, kind, transfer syntax, its name, SOP class, SOP Instance UID, series)
        and, with --profile, a DCMTK association profile (dcmqrscp -xf) that accepts
        the corpus' SOP classes in every transfer syntax, both roles (C-GET).

    corpus.py compare INDEX DIR
        For every readable instance of the index, compares DIR/<SOPInstanceUID>.dcm
        with the source copy: transfer syntax and the Pixel Data bytes (encapsulated
        fragments included). Prints one line per instance, "<uid>\\t<verdict>\\t<detail>",
        verdict one of same, missing, transcoded, pixels_differ; exit 0 when all same.

Files DCMTK must produce (pydicom cannot encode JPEG-LS near-lossless nor JPEG
lossless process 14) come from dcmcjpls/dcmcjpeg. Synthetic or public test data
only: pydicom's files are anonymous phantoms and test patterns.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid

import pydicom

SOURCE = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

# (name of the copy, source file, how it is made)
# how: "copy" re-identified with pydicom, "raw" byte copy (kept broken on purpose),
# "jls-near"/"jpeg-57" encoded by DCMTK first, "un-vr" SOP Class UID rewritten as UN.
FILES = [
    ("mr_explicit_le.dcm", "MR_small.dcm", "copy"),
    ("mr_implicit_le.dcm", "MR_small_implicit.dcm", "copy"),
    ("mr_big_endian.dcm", "MR_small_bigendian.dcm", "copy"),
    ("mr_rle.dcm", "MR_small_RLE.dcm", "copy"),
    ("mr_j2k_lossless.dcm", "MR_small_jp2klossless.dcm", "copy"),
    ("mr_jls_lossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "copy"),
    ("ct_explicit_le.dcm", "CT_small.dcm", "copy"),
    ("ct_jpeg_lossless_p14.dcm", "CT_small.dcm", "jpeg-57"),
    ("sc_j2k_lossy.dcm", "JPEG2000.dcm", "copy"),
    ("sc_jpeg_extended.dcm", "JPGExtended.dcm", "copy"),
    ("sc_jpeg_baseline.dcm", "SC_rgb_jpeg_dcmtk.dcm", "copy"),
    ("sc_jpeg_lossless_sv1.dcm", "SC_rgb_jpeg_gdcm.dcm", "copy"),
    ("sc_jls_near_lossless.dcm", "SC_rgb_small_odd.dcm", "jls-near"),
    ("sc_deflate.dcm", "image_dfl.dcm", "copy"),
    ("rtdose_rle.dcm", "rtdose_rle_1frame.dcm", "copy"),
    ("mr_rle_sopclass_un.dcm", "MR_small_RLE.dcm", "un-vr"),
    ("mr_truncated.dcm", "MR_truncated.dcm", "raw"),
]

TS_NAMES = {
    "1.2.840.10008.1.2": "ImplicitVRLittleEndian",
    "1.2.840.10008.1.2.1": "ExplicitVRLittleEndian",
    "1.2.840.10008.1.2.1.99": "DeflatedExplicitVRLittleEndian",
    "1.2.840.10008.1.2.2": "ExplicitVRBigEndian",
    "1.2.840.10008.1.2.4.50": "JPEGBaseline8Bit",
    "1.2.840.10008.1.2.4.51": "JPEGExtended12Bit",
    "1.2.840.10008.1.2.4.57": "JPEGLossless",
    "1.2.840.10008.1.2.4.70": "JPEGLosslessSV1",
    "1.2.840.10008.1.2.4.80": "JPEGLSLossless",
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless",
    "1.2.840.10008.1.2.4.90": "JPEG2000Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG2000",
    "1.2.840.10008.1.2.5": "RLELossless",
}

TS_PROFILE_NAMES = [  # every syntax DCMTK's profile parser knows by UID
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
]

QR_CLASSES = [
    "1.2.840.10008.1.1",                # Verification
    "1.2.840.10008.5.1.4.1.2.1.1",      # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.1.2",      # Patient Root MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",      # Patient Root GET
    "1.2.840.10008.5.1.4.1.2.2.1",      # Study Root FIND
    "1.2.840.10008.5.1.4.1.2.2.2",      # Study Root MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",      # Study Root GET
]


def new_uid():
    return "2.25.%d" % uuid.uuid4().int


def dcmtk_encode(how, src, dst):
    tool = {"jls-near": ["dcmcjpls", "+en"], "jpeg-57": ["dcmcjpeg", "+el"]}[how]
    subprocess.run(tool + [src, dst], check=True, stdout=subprocess.DEVNULL)


def reidentify(src, dst, study, series_of, un_vr=False):
    ds = pydicom.dcmread(src)
    sop_class = str(ds.SOPClassUID)
    uid = new_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.PatientID = "RTBCORPUS"
    ds.PatientName = "Corpus^Edge"
    ds.StudyInstanceUID = study
    ds.StudyID = "CORPUS"
    if sop_class not in series_of:
        series_of[sop_class] = (new_uid(), len(series_of) + 1)
    ds.SeriesInstanceUID, number = series_of[sop_class]
    ds.SeriesNumber = number
    ds.save_as(dst, write_like_original=False)
    if un_vr:
        # What some archives export: the SOP Class UID with VR UN in explicit VR.
        # pydicom writes a known tag with its dictionary VR, so the bytes are patched:
        # UN has a 2-byte reserved field and a 4-byte length (no group length in
        # group 0008 to fix).
        raw = sop_class.encode("ascii")
        if len(raw) % 2:
            raw += b"\0"
        ui = b"\x08\x00\x16\x00UI" + struct.pack("<H", len(raw)) + raw
        un = b"\x08\x00\x16\x00UN\x00\x00" + struct.pack("<I", len(raw)) + raw
        with open(dst, "rb") as f:
            data = f.read()
        if data.count(ui) != 1:
            raise SystemExit("corpus.py: cannot find the SOP Class UID of " + dst)
        with open(dst, "wb") as f:
            f.write(data.replace(ui, un))
    return sop_class, uid, ds.SeriesInstanceUID


def build(out_dir, profile):
    os.makedirs(out_dir, exist_ok=True)
    study = new_uid()
    series_of = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, source, how in FILES:
            src = os.path.join(SOURCE, source)
            dst = os.path.join(out_dir, name)
            if how == "raw":
                shutil.copyfile(src, dst)
                meta = pydicom.dcmread(src, force=True)
                rows.append((name, "unreadable", str(meta.file_meta.TransferSyntaxUID),
                             str(meta.SOPClassUID), str(meta.SOPInstanceUID), ""))
                continue
            if how in ("jls-near", "jpeg-57"):
                encoded = os.path.join(tmp, name)
                dcmtk_encode(how, src, encoded)
                src = encoded
            sop_class, uid, series = reidentify(src, dst, study, series_of, un_vr=(how == "un-vr"))
            ts = str(pydicom.dcmread(dst, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            rows.append((name, "un_vr" if how == "un-vr" else "good", ts, sop_class, uid, series))
    with open(os.path.join(out_dir, "index.tsv"), "w") as f:
        f.write("file\tkind\ttransfer_syntax\ttransfer_syntax_name\tsop_class\tsop_instance_uid\tseries_uid\n")
        for name, kind, ts, sop_class, uid, series in rows:
            f.write("\t".join([name, kind, ts, TS_NAMES.get(ts, ts), sop_class, uid, series]) + "\n")
    if profile:
        write_profile(profile, sorted({r[3] for r in rows}))
    return rows


def write_profile(path, storage_classes):
    lines = ["# dcmqrscp -xf profile written by tests/testbed/corpus.py", "",
             "[[TransferSyntaxes]]", "[Any]"]
    lines += ["TransferSyntax%d = %s" % (i + 1, ts) for i, ts in enumerate(TS_PROFILE_NAMES)]
    lines += ["[Uncompressed]", "TransferSyntax1 = 1.2.840.10008.1.2.1",
              "TransferSyntax2 = 1.2.840.10008.1.2", "", "[[PresentationContexts]]", "[Corpus]"]
    n = 0
    for uid in QR_CLASSES:
        n += 1
        lines.append("PresentationContext%d = %s\\Uncompressed" % (n, uid))
    for uid in storage_classes:
        n += 1
        lines.append("PresentationContext%d = %s\\Any" % (n, uid))
    lines += ["", "[[SCPSCURoleSelection]]", "[Both]"]
    lines += ["Role%d = %s\\BOTH" % (i + 1, uid) for i, uid in enumerate(storage_classes)]
    lines += ["", "[[Profiles]]", "[Corpus]", "PresentationContexts = Corpus",
              "SCPSCURoleSelection = Both", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def pixel_bytes(path):
    ds = pydicom.dcmread(path)
    return str(ds.file_meta.TransferSyntaxUID), ds.get("PixelData")


def compare(index, directory):
    base = os.path.dirname(os.path.abspath(index))
    bad = 0
    with open(index) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            if row["kind"] != "good":
                continue
            uid = row["sop_instance_uid"]
            got = os.path.join(directory, uid + ".dcm")
            if not os.path.exists(got):
                verdict, detail = "missing", row["file"]
            else:
                ts_a, px_a = pixel_bytes(os.path.join(base, row["file"]))
                ts_b, px_b = pixel_bytes(got)
                if ts_a != ts_b:
                    verdict = "transcoded"
                    detail = "%s: stored %s, arrived %s" % (row["file"], TS_NAMES.get(ts_a, ts_a),
                                                            TS_NAMES.get(ts_b, ts_b))
                elif px_a != px_b:
                    verdict, detail = "pixels_differ", row["file"]
                else:
                    verdict, detail = "same", "%s %s" % (row["file"], TS_NAMES.get(ts_a, ts_a))
            bad += verdict != "same"
            print("%s\t%s\t%s" % (uid, verdict, detail))
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "build":
        profile = None
        if len(argv) == 4 and argv[2] == "--profile":
            profile = argv[3]
        elif len(argv) != 2:
            sys.exit(__doc__)
        for row in build(argv[1], profile):
            print("\t".join(row))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return compare(argv[1], argv[2])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
