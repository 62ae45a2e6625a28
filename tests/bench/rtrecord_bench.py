#!/usr/bin/env python3
"""RT record generation benchmark, pydicom side (see rtrecord.bench.sh).

    python3 rtrecord_bench.py GROUPS.py CASE N DIR [nosave]

Does what rtbackup does for one Mosaiq delivery group, the way a pydicom program
would: the same mapping (enums, cm -> mm, MLC leaf decoding, deterministic UIDs,
values that change written at every control point, the rest at the first), a
pydicom Dataset of the same attributes, and the same atomic write (temporary file,
fsync, rename). Prints the wall time of the N-record loop in ms; the groups are
loaded before the clock starts.
"""
import ast
import hashlib
import os
import struct
import sys
import time
import uuid

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

RT_RECORD = "1.2.840.10008.5.1.4.1.1.481.4"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
MODALITY = {1: "PHOTON", 2: "ELECTRON", 3: "PHOTON"}
BEAM_TYPE = {1: "STATIC", 2: "DYNAMIC"}
TERMINATION = {0: "UNKNOWN", 1: "NORMAL", 2: "OPERATOR", 3: "MACHINE"}
VERIFIED = {1: "VERIFIED", 2: "VERIFIED_OVR", 3: "NOT_VERIFIED"}
DIRECTION = {1: "CW", 2: "CC", 3: "NONE"}
ENERGY_UNIT = {1: "KV", 2: "MV", 3: "MEV"}
NAMESPACE = uuid.UUID("37013394-92ba-40d8-8eb0-c61b23593452")


def uid(*names):
    h = hashlib.sha1(NAMESPACE.bytes)
    for n in names:
        b = str(n).encode()
        h.update(len(b).to_bytes(8, "big") + b)
    return "2.25.%d" % uuid.UUID(bytes=h.digest()[:16], version=5).int


def ds_(v):
    return format_number_as_ds(float(v))


def da_tm(iso):
    date, _, time_ = iso.partition("T")
    tm = time_.replace(":", "")
    if "." in tm:
        whole, frac = tm.split(".")
        frac = frac[:6].rstrip("0")
        tm = whole + ("." + frac if frac else "")
    return date.replace("-", ""), tm


def leaves(data, encoding, count):
    if encoding == "float32_mm":
        values = struct.unpack("<%df" % (len(data) // 4), data)
        values = [float("%.7g" % v) for v in values]
    else:
        if len(data) % 2:
            data += b"\0"
        values = [v / 10 for v in struct.unpack("<%dh" % (len(data) // 2), data)]
    return values[:count] if count else values


def mm(v):
    return None if v is None else v * 10


def control_points(field, encoding):
    # The same reading as rtbackup.mosaiq.map: specified meterset from the plan's
    # cumulative weights, delivered per PS3.3 C.8.8.21.2.2, couch as recorded (carried
    # while the plan does not move it).
    dose = field["dose"]
    points = sorted(field["points"], key=lambda p: p["Point"])
    last_index = points[-1]["Index"]
    start = dose.get("MetersetPrevDelivered") or 0
    finish = start + dose["Meterset"]
    cps = []
    couch = {}
    for p in points:
        actual = p.get("actual") or {}
        for col in ("Couch_Vrt", "Couch_Lng", "Couch_Lat"):
            if actual.get(col) is not None:
                couch[col] = actual[col]
        specified = round(p["Index"] / last_index * field["Meterset"], 4)
        mlc = None
        if field.get("Mlc") and p.get("A_Leaf_Set") is not None:
            mlc = leaves(p["A_Leaf_Set"], encoding, p.get("MLC_Leaves")) + \
                leaves(p["B_Leaf_Set"], encoding, p.get("MLC_Leaves"))
        jaw_x = [mm(p["Coll_X1"]), mm(p["Coll_X2"])] if p.get("Coll_X1") is not None else None
        jaw_y = [mm(p["Coll_Y1"]), mm(p["Coll_Y2"])] if p.get("Coll_Y1") is not None else None
        cps.append({
            "index": p["Point"], "time": actual.get("Tx_DtTm") or dose["Tx_DtTm"],
            "specified": specified, "delivered": max(start, min(specified, finish)),
            "rate": p.get("Meterset_Rate"), "energy": p.get("Energy"),
            "unit": ENERGY_UNIT.get(p.get("Energy_Unit_Enum")),
            "GantryAngle": p["Gantry_Ang"], "GantryRotationDirection": DIRECTION.get(p["Gantry_Dir_Enum"]),
            "BeamLimitingDeviceAngle": p["Coll_Ang"],
            "BeamLimitingDeviceRotationDirection": DIRECTION.get(p["Coll_Dir_Enum"]),
            "PatientSupportAngle": p["Couch_Ang"],
            "PatientSupportRotationDirection": DIRECTION.get(p.get("Couch_Ang_Dir_Enum")),
            "TableTopEccentricAxisDistance": mm(p.get("Couch_Top_Axis_Distance")),
            "TableTopEccentricAngle": p["Couch_Top"],
            "TableTopEccentricRotationDirection": DIRECTION.get(p["Couch_Top_Dir_Enum"]),
            "TableTopVerticalPosition": mm(couch.get("Couch_Vrt")),
            "TableTopLongitudinalPosition": mm(couch.get("Couch_Lng")),
            "TableTopLateralPosition": mm(couch.get("Couch_Lat")),
            "ASYMX": jaw_x, "ASYMY": jaw_y, "MLCX": mlc,
        })
    return cps


ANGLES = ["GantryAngle", "BeamLimitingDeviceAngle", "PatientSupportAngle", "TableTopEccentricAxisDistance",
          "TableTopEccentricAngle", "TableTopVerticalPosition", "TableTopLongitudinalPosition",
          "TableTopLateralPosition"]
DIRECTIONS = ["GantryRotationDirection", "BeamLimitingDeviceRotationDirection",
              "PatientSupportRotationDirection", "TableTopEccentricRotationDirection"]


def beam_item(field, group, encoding):
    dose = field["dose"]
    cps = control_points(field, encoding)
    b = Dataset()
    b.CurrentFractionNumber = dose["Fractions_Tx"]
    b.TreatmentTerminationStatus = TERMINATION.get(dose["Termination_Status_Enum"], "UNKNOWN")
    if dose.get("TerminationCode") is not None:
        b.TreatmentTerminationCode = str(dose["TerminationCode"])
    b.TreatmentVerificationStatus = VERIFIED.get(dose.get("Termination_Verify_Status_Enum"), "")
    b.SpecifiedPrimaryMeterset = ds_(field["Meterset"])
    b.DeliveredPrimaryMeterset = ds_(dose["Meterset"])
    b.SourceAxisDistance = ds_(field["Sad"] * 10)
    varies = {k: any(cp[k] != cps[0][k] for cp in cps) for k in ANGLES + DIRECTIONS + ["ASYMX", "ASYMY", "MLCX"]}
    energy_varies = any((cp["energy"], cp["unit"]) != (cps[0]["energy"], cps[0]["unit"]) for cp in cps)
    items = []
    for k, cp in enumerate(cps):
        c = Dataset()
        c.TreatmentControlPointDate, c.TreatmentControlPointTime = da_tm(cp["time"])
        c.SpecifiedMeterset = ds_(cp["specified"])
        c.DeliveredMeterset = ds_(cp["delivered"])
        c.DoseRateDelivered = ""
        c.DoseRateSet = ds_(cp["rate"]) if cp["rate"] is not None else ""
        if (k == 0 or energy_varies) and cp["unit"] in ("MV", "MEV"):
            c.NominalBeamEnergyUnit = cp["unit"]
            c.NominalBeamEnergy = ds_(cp["energy"])
        devices = []
        for name in ("ASYMX", "ASYMY", "MLCX"):
            if cp[name] is not None and (k == 0 or varies[name]):
                d = Dataset()
                d.RTBeamLimitingDeviceType = name
                d.LeafJawPositions = [ds_(v) for v in cp[name]]
                devices.append(d)
        if devices:
            c.BeamLimitingDevicePositionSequence = Sequence(devices)
        for name in ANGLES:
            if (k == 0 or varies[name]) and cp[name] is not None:
                setattr(c, name, ds_(cp[name]))
        for name in DIRECTIONS:
            if k == 0 or varies[name]:
                setattr(c, name, cp[name])
        c.ReferencedControlPointIndex = cp["index"]
        items.append(c)
    b.ControlPointDeliverySequence = Sequence(items)
    pairs = []
    for name in ("ASYMX", "ASYMY", "MLCX"):
        if cps[0][name] is not None:
            d = Dataset()
            d.RTBeamLimitingDeviceType = name
            d.NumberOfLeafJawPairs = len(cps[0][name]) // 2 if name == "MLCX" else 1
            pairs.append(d)
    b.BeamLimitingDeviceLeafPairsSequence = Sequence(pairs)
    b.BeamName = field["OriginalBeamName"]
    b.BeamType = BEAM_TYPE[field["Beam_Type_Flag"]]
    b.RadiationType = MODALITY[field["Modality_Enum"]]
    b.TreatmentDeliveryType = "TREATMENT"
    b.NumberOfWedges = b.NumberOfCompensators = b.NumberOfBoli = b.NumberOfBlocks = 0
    b.NumberOfControlPoints = len(items)
    b.ReferencedBeamNumber = field["OriginalBeamNumber"]
    return b


def record(group, encoding):
    patient, site, plan, machine = group["patient"], group["site"], group["plan"], group["machine"]
    fields = sorted(group["fields"], key=lambda f: f["OriginalBeamNumber"])
    times = sorted(f["dose"]["Tx_DtTm"] for f in fields)
    dhs = ",".join(str(d) for d in sorted(f["dose"]["DHS_ID"] for f in fields))
    ds = Dataset()
    ds.InstanceCreationDate, ds.InstanceCreationTime = da_tm(times[-1])
    ds.SOPClassUID = RT_RECORD
    ds.SOPInstanceUID = uid("BENCH/MOSAIQ", "rtrecord", site["SIT_SET_ID"], plan["OriginalPlanUID"],
                            group["fraction"], dhs)
    ds.StudyDate, ds.StudyTime = da_tm(plan["Study_DtTm"])
    ds.AccessionNumber = ""
    ds.Modality = "RTRECORD"
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = plan["StudyDescription"]
    ds.SeriesDescription = "Treatment records (Mosaiq)"
    ds.OperatorsName = ""
    name = [patient["Last_Name"], patient["First_Name"], patient.get("MIddle_Name") or "", "",
            patient.get("Suffix") or ""]
    ds.PatientName = "^".join(name).rstrip("^")
    ds.PatientID = patient["IDA"]
    ds.PatientBirthDate = patient["Birth_DtTm"][:10].replace("-", "")
    ds.PatientSex = {"Male": "M", "Female": "F"}.get(patient.get("Gender"), "")
    ds.StudyInstanceUID = plan["StudyInstanceUID"]
    ds.SeriesInstanceUID = uid("BENCH/MOSAIQ", "rtrecord-series", site["SIT_SET_ID"], plan["OriginalPlanUID"])
    ds.StudyID = plan["StudyID"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = group["fraction"]
    ds.TreatmentDate, ds.TreatmentTime = da_tm(times[0])
    m = Dataset()
    m.Manufacturer = ""
    m.InstitutionName = machine["Inst_Name"]
    m.ManufacturerModelName = machine["Source_Model"]
    m.DeviceSerialNumber = ""
    m.TreatmentMachineName = machine["Source_Name"][:16]
    ds.TreatmentMachineSequence = Sequence([m])
    ref = Dataset()
    ref.ReferencedSOPClassUID = RT_PLAN
    ref.ReferencedSOPInstanceUID = plan["OriginalPlanUID"]
    ds.ReferencedRTPlanSequence = Sequence([ref])
    ds.NumberOfFractionsPlanned = site["Fractions"]
    ds.PrimaryDosimeterUnit = "MU"
    ds.TreatmentSessionBeamSequence = Sequence([beam_item(f, group, encoding) for f in fields])
    block = ds.private_block(0x3261, "TJU RadOnc Customized Data", create=True)
    for element, value in ((1, site["Site_Name"]), (2, site["Setup_Note"]), (3, site["Activity"]),
                           (4, plan["Label"])):
        block.add_new(element, "LT", value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_RECORD
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    return ds


def save_atomic(ds, path):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        ds.save_as(f, write_like_original=False)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    d = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    os.fsync(d)
    os.close(d)


def main():
    groups_file, case, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    save = not (len(sys.argv) > 5 and sys.argv[5] == "nosave")
    with open(groups_file, encoding="utf-8") as f:
        group = ast.literal_eval(f.read())[case]
    encoding = "float32_mm" if case == "two_beam_static" else "int16_0.01cm"
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        ds = record(group, encoding)
        if save:
            save_atomic(ds, os.path.join(out, "%d.dcm" % i))
    print("%.0f" % ((time.perf_counter() - t0) * 1000))


if __name__ == "__main__":
    main()
