#!/usr/bin/python3
"""odil_qr: a Query/Retrieve SCP on python3-odil, with switchable vendor quirks.

Clinic archives (ARIA, MIM, ...) are DICOM implementations nobody here wrote, with
their own non-conformances. This peer uses another DICOM stack than the DCMTK that
rtbackup, dcmqrscp and Orthanc share (odil: its own upper layer, DIMSE encoding and
data set codec), and can be told to misbehave the way real archives do.

Run it with Debian's interpreter (/usr/bin/python3 has odil; pydicom is not needed):

    odil_qr.py --aet ODIL_QR --port 11112 --dir FOLDER \\
               [--quirks FILE] [--destinations FILE] [--host 127.0.0.1] [--idle-timeout 60]

The testbed (tests/testbed/testbed.sh) starts one and writes to testbed.env:
    ODIL_AET      its AE title (ODIL_QR)
    ODIL_PORT     its port on $HOST
    ODIL_DIR      the folder it serves (its own synthetic patients RTB101.., not ARIA's)
    ODIL_QUIRKS   the quirks file (initially "{}")
    ODIL_DESTINATIONS  the C-MOVE destination table
    ODIL_PATIENTS, ODIL_INSTANCES  how many patients/instances it serves initially
    ODIL_PID      its pid; its log is $RTB_TESTBED_DIR/logs/odil.log

What it serves
  - FOLDER (recursively) is re-scanned at the start of every association: files added
    or removed between associations are seen (headers are cached by mtime and size;
    files that are not DICOM are skipped and logged once).
  - C-ECHO.
  - C-FIND, Study Root (STUDY/SERIES/IMAGE, and PATIENT leniently) and Patient Root
    (PATIENT/STUDY/SERIES/IMAGE). Matching: universal (empty), single value, wildcards
    * and ? (PN case-insensitively), lists of values (UID lists, backslash-separated),
    DA/TM/DT ranges (A-B, A-, -B). Keys of a level below the query level do not match
    and come back empty. Returns the requested keys (empty when unknown), plus
    SpecificCharacterSet and QueryRetrieveLevel; computes NumberOfPatientRelated*,
    NumberOfStudyRelated*, NumberOfSeriesRelatedInstances, ModalitiesInStudy,
    SOPClassesInStudy; RetrieveAETitle is its own AE title.
  - C-MOVE at PATIENT (Patient Root), STUDY, SERIES and IMAGE level (a SOPInstanceUID
    list is fine), by C-STORE sub-operations on a new association to the destination
    (calling AE = its own AE title, with Move Originator AE/Message ID), looked up in
    the destination table (lines "AET HOST PORT", re-read at each C-MOVE). Conformant
    by default: a pending response after each sub-operation but the last, with
    Remaining/Completed/Failed/Warning counts; a final response with Completed/Failed/
    Warning, FailedSOPInstanceUIDList when something failed; status 0x0000 when all
    succeeded, 0xB000 when some failed, 0xA702 when all failed or the destination could
    not be reached, 0xA801 for an unknown destination, 0xA900 for an identifier without
    the level's unique key.
  - Anything else (C-GET, C-STORE, N-*) is answered 0x0211 (unrecognized operation).
  - The called AE title must be its own: odil's Python API cannot reject an association,
    so any other called AE gets an A-ASSOCIATE-AC followed at once by an A-ABORT.
  - C-CANCEL is not honoured (odil cannot peek at the association mid-operation).

Quirks: a JSON object in the quirks file, read at the start of every association (no
restart; a missing or unreadable file means no quirks, and says so in the log):
  "no_counts": true        NumberOf* keys (Patient/Study/Series related) are never returned,
                           even when asked: the element is left out of the response.
               "empty"     ... returned, but zero-length.
  "image_find_needs_series": true | STATUS
                           an IMAGE-level C-FIND without a single StudyInstanceUID and a single
                           SeriesInstanceUID (no list, no wildcard) gets no match and a final
                           0xA900 "Identifier does not match SOP Class" (what a strictly
                           hierarchical archive such as dcmqrscp answers) with an ErrorComment;
                           a number instead of true picks the status (e.g. 49152 = 0xC000).
  "warning_status": true   C-FIND and C-MOVE that would end 0x0000 end 0xB000 instead (every
                           match and every instance is still delivered, counts unchanged).
  "move_responses_without_counts": true
                           pending and final C-MOVE responses carry no NumberOf*Suboperations
                           (pending responses are still sent, one per sub-operation).
  "drop": SELECTOR         a C-MOVE silently skips the selected instances: not stored, not
                           counted anywhere; the counts are those of the instances it sends
                           (self-consistent, just short) and the status is success.
  "drop_report": "completed"
                           ... the skipped instances are counted as completed instead (lying).
  "refuse_uid_lists": true an IMAGE-level C-MOVE whose SOPInstanceUID holds more than one UID
                           is answered 0xA900 at once with an ErrorComment; nothing is moved.
  Others, seen on real archives:
  "refuse_move_levels": ["STUDY", ...]
                           C-MOVE at these levels is answered 0xA900 at once, nothing moved.
  "fail": SELECTOR         the selected sub-operations fail (not sent; counted failed, listed
                           in FailedSOPInstanceUIDList, final 0xB000): a conformant partial
                           failure, for retry paths.
  "find_limit": N          C-FIND returns at most N matches and ends with success (the
                           silent truncation of archives with a result cap).
  "move_abort_after": N    after N sub-operations of a C-MOVE, A-ABORT the association of the
                           requester (an archive crashing mid-move); the N are delivered.
  "move_delay_ms": MS      wait MS before every sub-operation (a slow archive).
  "no_pending_responses": true
                           a C-MOVE answers only once, when every sub-operation is done
                           (pending responses are optional in PS3.4; some archives send none).
  "find_delay_ms": MS      wait MS before answering each C-FIND (a slow database).
  "duplicate_matches": true
                           every C-FIND match is sent twice (an archive answering from two
                           nodes, or listing a study once per patient record it is filed under).
  SELECTOR is {"every_nth": N} (the Nth, 2Nth, ... instance of each C-MOVE, in the order
  sent: by study, series, InstanceNumber, SOPInstanceUID), {"uids": [SOPInstanceUID, ...]},
  {"modalities": ["RTDOSE", ...]}, or several of these (any selects).

Every association and request is logged (one line each, with its outcome) to stderr
or --log. SIGTERM or SIGINT stops it and its associations at once.

How it runs: odil's Association.receive_association binds a new listening socket for
each association and closes it afterwards (so a second client would be refused while
one is served), and it blocks without releasing the GIL. So the main process listens
itself (a real backlog, any number of clients at once) and forks one worker per
connection; the worker forks odil on a private port and relays bytes between the two
sockets. The DICOM on the wire is odil's. FindSCP/MoveSCP/SCPDispatcher are not used:
their Python generators cannot end a response with a chosen status (odil's
SCP::Exception is not exposed), MoveSCP always sends counts, and StoreSCU ignores a
C-STORE failure status; the DIMSE messages are built here with odil.messages instead.
"""

import argparse
import ctypes
import fnmatch
import json
import os
import select
import signal
import socket
import time

import odil

R = odil.registry
LOG_FD = 2
AET = "ODIL_QR"


def log(msg):
    line = "%s odil_qr[%d] %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), msg)
    try:
        os.write(LOG_FD, line.encode("utf-8", "replace"))
    except OSError:
        pass


def tint(tag):
    return (tag.group << 16) | tag.element


def tags(*keywords):
    return {tint(getattr(R, k)) for k in keywords}


# Which level an attribute belongs to (anything not listed is an IMAGE attribute).
PATIENT, STUDY, SERIES, IMAGE = 0, 1, 2, 3
LEVELS = {"PATIENT": PATIENT, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": IMAGE}
LEVEL_OF = {}
for _kw in ("PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientNames",
            "PatientBirthDate", "PatientBirthTime", "PatientSex", "EthnicGroup", "PatientComments",
            "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances"):
    LEVEL_OF[tint(getattr(R, _kw))] = PATIENT
for _kw in ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
            "StudyDescription", "ReferringPhysicianName", "PhysiciansOfRecord",
            "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription", "PatientAge",
            "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
            "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances"):
    LEVEL_OF[tint(getattr(R, _kw))] = STUDY
for _kw in ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
            "SeriesTime", "BodyPartExamined", "ProtocolName", "Laterality", "OperatorsName",
            "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
            "Manufacturer", "ManufacturerModelName", "StationName", "InstitutionName",
            "FrameOfReferenceUID", "NumberOfSeriesRelatedInstances"):
    LEVEL_OF[tint(getattr(R, _kw))] = SERIES

COUNT_TAGS = tags("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                  "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances")
COMPUTED_TAGS = COUNT_TAGS | tags("ModalitiesInStudy", "SOPClassesInStudy")
T_QRLEVEL = tint(R.QueryRetrieveLevel)
T_CHARSET = tint(R.SpecificCharacterSet)
T_RETRIEVE_AET = tint(R.RetrieveAETitle)
T_PATIENT_ID = tint(R.PatientID)
T_STUDY = tint(R.StudyInstanceUID)
T_SERIES = tint(R.SeriesInstanceUID)
T_SOP = tint(R.SOPInstanceUID)
UNIQUE = {PATIENT: T_PATIENT_ID, STUDY: T_STUDY, SERIES: T_SERIES, IMAGE: T_SOP}

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
# Study Root has no PATIENT level in the standard; archives (and Orthanc) answer it anyway.
MODEL_LEVELS = {STUDY_ROOT_FIND: (PATIENT, STUDY, SERIES, IMAGE),
                STUDY_ROOT_MOVE: (STUDY, SERIES, IMAGE),
                PATIENT_ROOT_FIND: (PATIENT, STUDY, SERIES, IMAGE),
                PATIENT_ROOT_MOVE: (PATIENT, STUDY, SERIES, IMAGE)}

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
NATIVE_TS = {IMPLICIT_LE, EXPLICIT_LE, "1.2.840.10008.1.2.2"}

SUCCESS, PENDING, WARNING = 0x0000, 0xFF00, 0xB000
NO_MATCH_SOP_CLASS = 0xA900       # Identifier does not match SOP Class
DEST_UNKNOWN = 0xA801             # Refused: Move Destination unknown
OUT_OF_RESOURCES_SUBOPS = 0xA702  # Refused: Out of Resources - unable to perform sub-operations
UNABLE_TO_PROCESS = 0xC000
UNRECOGNIZED = 0x0211

KNOWN_QUIRKS = {"no_counts", "image_find_needs_series", "warning_status",
                "move_responses_without_counts", "drop", "drop_report", "refuse_uid_lists",
                "refuse_move_levels", "fail", "find_limit", "move_abort_after", "move_delay_ms",
                "no_pending_responses",
                "find_delay_ms", "duplicate_matches"}


def text(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def values(elem):
    """An element's values as strings ([] for empty, sequences and binary)."""
    if elem.is_string():
        return [text(v) for v in elem.as_string()]
    if elem.is_int():
        return [str(v) for v in elem.as_int()]
    if elem.is_real():
        return ["%g" % v for v in elem.as_real()]
    return []


def first(ds, tag, default=""):
    if ds.has(tag):
        v = values(ds[tag])
        if v:
            return v[0]
    return default


# ---------------------------------------------------------------------------------
# The index: one entry per DICOM file of the folder, headers only.

class Instance:
    __slots__ = ("path", "stamp", "header", "ts", "sop_class", "sop", "patient", "study",
                 "series", "modality", "number", "values")

    def __init__(self, path, stamp, meta, header):
        self.path, self.stamp, self.header = path, stamp, header
        self.ts = first(meta, R.TransferSyntaxUID, IMPLICIT_LE)
        self.sop_class = first(header, R.SOPClassUID) or first(meta, R.MediaStorageSOPClassUID)
        self.sop = first(header, R.SOPInstanceUID) or first(meta, R.MediaStorageSOPInstanceUID)
        self.patient = first(header, R.PatientID)
        self.study = first(header, R.StudyInstanceUID)
        self.series = first(header, R.SeriesInstanceUID)
        self.modality = first(header, R.Modality)
        try:
            self.number = int(first(header, R.InstanceNumber, "0"))
        except ValueError:
            self.number = 0
        self.values = {}
        for tag in header.keys():
            self.values[tint(tag)] = values(header[tag])

    def order(self):
        return (self.patient, self.study, self.series, self.number, self.sop)


class Index:
    def __init__(self, folder):
        self.folder = folder
        self.cache = {}  # path -> Instance, or (stamp, None) for a file that is not DICOM
        self.instances = []

    def scan(self):
        seen = {}
        for root, dirs, files in os.walk(self.folder):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size)
                old = self.cache.get(path)
                if old is not None and (old.stamp if isinstance(old, Instance) else old[0]) == stamp:
                    seen[path] = old
                    continue
                try:
                    with odil.open(path) as stream:
                        meta, header = odil.Reader.read_file(
                            stream, halt_condition=lambda t: t.group >= 0x7FE0)
                    inst = Instance(path, stamp, meta, header)
                    if not (inst.sop and inst.study and inst.series):
                        raise ValueError("no SOP/Study/Series Instance UID")
                    seen[path] = inst
                except Exception as e:  # odil raises its own exception types
                    log("skipping %s: not a usable DICOM file (%s)" % (path, str(e).strip()[:120]))
                    seen[path] = (stamp, None)
        self.cache = seen
        insts = [v for v in seen.values() if isinstance(v, Instance)]
        insts.sort(key=Instance.order)
        self.instances = insts
        self.by = {PATIENT: {}, STUDY: {}, SERIES: {}}
        for i in insts:
            self.by[PATIENT].setdefault(i.patient, []).append(i)
            self.by[STUDY].setdefault(i.study, []).append(i)
            self.by[SERIES].setdefault(i.series, []).append(i)


# ---------------------------------------------------------------------------------
# Matching.

def norm_time(s):
    s = s.replace(":", "")
    whole, _, frac = s.partition(".")
    return whole.ljust(6, "0") + "." + frac.ljust(6, "0")


def match_one(vr, q, have):
    """One query value q against the record's values `have` (a list)."""
    if q in ("", "*"):
        return True
    if vr in ("DA", "TM", "DT") and "-" in q:
        lo, _, hi = q.partition("-")
        for h in have:
            if vr == "TM":
                h, l, u = norm_time(h), norm_time(lo) if lo else "", norm_time(hi) if hi else ""
            else:  # DA, DT: compare as far as the bound goes (a DT bound may be a date)
                l, u = lo, hi
            if (not l or h[:len(l)] >= l) and (not u or h[:len(u)] <= u):
                return True
        return False
    if vr == "PN":
        q = q.lower()
        have = [h.lower() for h in have]
    if vr != "UI" and ("*" in q or "?" in q):
        return any(fnmatch.fnmatchcase(h, q.replace("[", "[[]")) for h in have)
    return q in have


class Record:
    """One match at a query level: a patient, study, series or instance."""

    def __init__(self, index, level, insts):
        self.index, self.level, self.insts, self.rep = index, level, insts, insts[0]

    def available(self, t):
        return t in COMPUTED_TAGS or LEVEL_OF.get(t, IMAGE) <= self.level

    def computed(self, t):
        r = self.rep
        by = self.index.by
        if t == tint(R.NumberOfPatientRelatedStudies):
            return [str(len({i.study for i in by[PATIENT].get(r.patient, [])}))]
        if t == tint(R.NumberOfPatientRelatedSeries):
            return [str(len({i.series for i in by[PATIENT].get(r.patient, [])}))]
        if t == tint(R.NumberOfPatientRelatedInstances):
            return [str(len(by[PATIENT].get(r.patient, [])))]
        if t == tint(R.NumberOfStudyRelatedSeries):
            return [str(len({i.series for i in by[STUDY].get(r.study, [])}))]
        if t == tint(R.NumberOfStudyRelatedInstances):
            return [str(len(by[STUDY].get(r.study, [])))]
        if t == tint(R.NumberOfSeriesRelatedInstances):
            return [str(len(by[SERIES].get(r.series, [])))]
        if t == tint(R.ModalitiesInStudy):
            return sorted({i.modality for i in by[STUDY].get(r.study, []) if i.modality})
        if t == tint(R.SOPClassesInStudy):
            return sorted({i.sop_class for i in by[STUDY].get(r.study, [])})
        return []

    def get(self, t):
        if t in COMPUTED_TAGS:
            return self.computed(t)
        return self.rep.values.get(t, [])


def query_keys(ident):
    """(tag int, Tag, vr, values) of every key of a request identifier."""
    out = []
    for tag in ident.keys():
        elem = ident[tag]
        out.append((tint(tag), tag, elem.vr.name if hasattr(elem.vr, "name") else str(elem.vr),
                    elem, values(elem)))
    return out


def records(index, level, keys):
    """The records at `level` matching the identifier's keys."""
    groups = {}
    order = []
    for inst in index.instances:
        k = (inst.patient, inst.study, inst.series, inst.sop)[:level + 1]
        if k not in groups:
            groups[k] = []
            order.append(k)
        groups[k].append(inst)
    out = []
    for k in order:
        rec = Record(index, level, groups[k])
        ok = True
        for t, _tag, vr, elem, qv in keys:
            if t in (T_QRLEVEL, T_CHARSET) or (t >> 16) == 0 or vr == "SQ" or not qv:
                continue
            if not rec.available(t):
                continue  # a key below the query level: not matched, returned empty
            have = rec.get(t)
            if not any(match_one(vr, q, have) for q in qv):
                ok = False
                break
        if ok:
            out.append(rec)
    return out


# ---------------------------------------------------------------------------------
# One association (runs in its own process).

class Association:
    def __init__(self, assoc, index, quirks, destinations):
        self.assoc, self.index, self.q, self.destinations = assoc, index, quirks, destinations
        p = assoc.get_negotiated_parameters()
        self.calling = text(p.get_calling_ae_title()).strip()
        self.called = text(p.get_called_ae_title()).strip()

    def send(self, msg, sop_class):
        self.assoc.send_message(msg, sop_class)

    def respond_status(self, cls, mid, sop_class, status, comment=None):
        rsp = cls(mid, status)
        rsp.set_affected_sop_class_uid(sop_class)
        if comment:
            rsp.get_command_set().add(R.ErrorComment, [comment[:64]])
        self.send(rsp, sop_class)

    # C-ECHO ------------------------------------------------------------------------
    def echo(self, msg):
        req = odil.messages.CEchoRequest(msg)
        sop_class = text(req.get_affected_sop_class_uid())
        self.send(odil.messages.CEchoResponse(req.get_message_id(), SUCCESS, sop_class), sop_class)
        log("C-ECHO from %s: 0x0000" % self.calling)

    # C-FIND ------------------------------------------------------------------------
    def find(self, msg):
        req = odil.messages.CFindRequest(msg)
        mid = req.get_message_id()
        sop_class = text(req.get_affected_sop_class_uid())
        ident = req.get_data_set()
        keys = query_keys(ident)
        level_name = first(ident, R.QueryRetrieveLevel).strip().upper()
        desc = describe(level_name, keys)

        def final(status, comment=None, n=0):
            self.respond_status(odil.messages.CFindResponse, mid, sop_class, status, comment)
            log("C-FIND from %s %s: %d match(es), 0x%04X%s" % (
                self.calling, desc, n, status, " (%s)" % comment if comment else ""))

        level = LEVELS.get(level_name)
        if sop_class not in MODEL_LEVELS or sop_class.endswith(".2"):
            return final(0x0122, "SOP class not supported")
        if level is None or level not in MODEL_LEVELS[sop_class]:
            return final(NO_MATCH_SOP_CLASS, "bad QueryRetrieveLevel %r" % level_name)

        needs = self.q.get("image_find_needs_series")
        if needs and level == IMAGE:
            byt = {t: qv for t, _g, _v, _e, qv in keys}
            def single(t):
                qv = byt.get(t, [])
                return len(qv) == 1 and qv[0] and "*" not in qv[0] and "?" not in qv[0]
            if not (single(T_STUDY) and single(T_SERIES)):
                status = needs if isinstance(needs, int) and not isinstance(needs, bool) \
                    else NO_MATCH_SOP_CLASS
                return final(status, "IMAGE level needs StudyInstanceUID and SeriesInstanceUID")

        delay = self.q.get("find_delay_ms")
        if isinstance(delay, (int, float)) and not isinstance(delay, bool) and delay > 0:
            time.sleep(delay / 1000.0)
        recs = records(self.index, level, keys)
        limit = self.q.get("find_limit")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            recs = recs[:limit]
        if self.q.get("duplicate_matches"):
            recs = [rec for rec in recs for _ in (0, 1)]
        no_counts = self.q.get("no_counts")
        for rec in recs:
            rsp = odil.DataSet()
            for t, tag, vr, elem, _qv in keys:
                if t == T_QRLEVEL or t == T_CHARSET or (t >> 16) == 0:
                    continue
                if t in COUNT_TAGS and no_counts:
                    if no_counts == "empty":
                        rsp.add(tag, elem.vr)
                    continue
                if t == T_RETRIEVE_AET:
                    rsp.add(tag, [AET], elem.vr)
                elif t in COMPUTED_TAGS:
                    vals = rec.computed(t)
                    if t in COUNT_TAGS:
                        rsp.add(tag, [int(v) for v in vals], odil.VR.IS)
                    elif vals:
                        rsp.add(tag, vals, elem.vr)
                    else:
                        rsp.add(tag, elem.vr)
                elif rec.available(t) and rec.rep.header.has(tag) and vr != "SQ":
                    rsp.add(tag, rec.rep.header[tag])
                else:
                    rsp.add(tag, elem.vr)
            if rec.rep.header.has(R.SpecificCharacterSet):
                rsp.add(R.SpecificCharacterSet, rec.rep.header[R.SpecificCharacterSet])
            rsp.add(R.QueryRetrieveLevel, [level_name])
            pending = odil.messages.CFindResponse(mid, PENDING, rsp)
            pending.set_affected_sop_class_uid(sop_class)
            self.send(pending, sop_class)
        final(WARNING if self.q.get("warning_status") else SUCCESS, None, len(recs))

    # C-MOVE ------------------------------------------------------------------------
    def move(self, msg):
        req = odil.messages.CMoveRequest(msg)
        mid = req.get_message_id()
        sop_class = text(req.get_affected_sop_class_uid())
        dest = text(req.get_move_destination()).strip()
        ident = req.get_data_set()
        keys = query_keys(ident)
        level_name = first(ident, R.QueryRetrieveLevel).strip().upper()
        desc = "%s -> %s" % (describe(level_name, keys), dest)
        q = self.q
        with_counts = not q.get("move_responses_without_counts")

        def response(status, remaining=None, completed=0, failed=0, warning=0, failed_uids=()):
            data = None
            if failed_uids and status != PENDING:
                data = odil.DataSet()
                data.add(R.FailedSOPInstanceUIDList, list(failed_uids))
            rsp = odil.messages.CMoveResponse(mid, status, data) if data is not None \
                else odil.messages.CMoveResponse(mid, status)
            rsp.set_affected_sop_class_uid(sop_class)
            if with_counts:
                if remaining is not None:
                    rsp.set_number_of_remaining_sub_operations(remaining)
                rsp.set_number_of_completed_sub_operations(completed)
                rsp.set_number_of_failed_sub_operations(failed)
                rsp.set_number_of_warning_sub_operations(warning)
            return rsp

        def refuse(status, comment):
            self.respond_status(odil.messages.CMoveResponse, mid, sop_class, status, comment)
            log("C-MOVE from %s %s: refused 0x%04X (%s)" % (self.calling, desc, status, comment))

        level = LEVELS.get(level_name)
        if sop_class not in MODEL_LEVELS or not sop_class.endswith(".2"):
            return refuse(0x0122, "SOP class not supported")
        if level is None or level not in MODEL_LEVELS[sop_class]:
            return refuse(NO_MATCH_SOP_CLASS, "bad QueryRetrieveLevel %r" % level_name)
        byt = {t: qv for t, _g, _v, _e, qv in keys}
        if not [v for v in byt.get(UNIQUE[level], []) if v]:
            return refuse(NO_MATCH_SOP_CLASS, "no %s for a %s-level C-MOVE" % (
                odil.Tag(UNIQUE[level]).get_name(), level_name))
        if level_name in (q.get("refuse_move_levels") or []):
            return refuse(NO_MATCH_SOP_CLASS, "%s-level C-MOVE not supported" % level_name)
        if q.get("refuse_uid_lists") and level == IMAGE and len(byt.get(T_SOP, [])) > 1:
            return refuse(NO_MATCH_SOP_CLASS, "one SOPInstanceUID per C-MOVE")
        addr = self.destinations.get(dest)
        if addr is None:
            return refuse(DEST_UNKNOWN, "move destination %s unknown" % dest)

        # Only the unique keys of the levels down to the requested one select instances.
        todo = []
        for inst in self.index.instances:
            ok = True
            for lv in range(level + 1):
                t = UNIQUE[lv]
                want = [v for v in byt.get(t, []) if v]
                if lv == PATIENT and sop_class == STUDY_ROOT_MOVE:
                    continue
                if want and inst.values.get(t, [""])[0] not in want:
                    ok = False
                    break
            if ok:
                todo.append(inst)

        dropped = [i for n, i in enumerate(todo) if selected(q.get("drop"), n, i)]
        report_dropped = q.get("drop_report") == "completed"
        if dropped:
            drop_set = {id(i) for i in dropped}
            todo = [i for i in todo if id(i) not in drop_set]
        failing = {id(i) for n, i in enumerate(todo) if selected(q.get("fail"), n, i)}

        completed = len(dropped) if report_dropped else 0
        failed, warning = 0, 0
        failed_uids = []
        remaining = len(todo)
        abort_after = q.get("move_abort_after")
        delay = (q.get("move_delay_ms") or 0) / 1000.0
        done = 0
        store = Store(addr, dest, self.calling, mid)
        try:
            for inst in todo:
                if isinstance(abort_after, int) and done >= abort_after:
                    log("C-MOVE from %s %s: quirk move_abort_after=%d, aborting" % (
                        self.calling, desc, abort_after))
                    store.close()
                    self.assoc.abort(0, 0)
                    os._exit(0)
                if delay:
                    time.sleep(delay)
                if id(inst) in failing:
                    status = UNABLE_TO_PROCESS
                else:
                    status = store.send(inst, todo)
                done += 1
                remaining -= 1
                if status == SUCCESS:
                    completed += 1
                elif status in (0xB000, 0xB006, 0xB007):
                    warning += 1
                else:
                    failed += 1
                    failed_uids.append(inst.sop)
                if remaining > 0 and not q.get("no_pending_responses"):
                    self.send(response(PENDING, remaining, completed, failed, warning), sop_class)
        finally:
            store.close()

        if failed and not completed and not warning:
            status = OUT_OF_RESOURCES_SUBOPS
        elif failed or warning:
            status = WARNING
        else:
            status = WARNING if q.get("warning_status") else SUCCESS
        rsp = response(status, None, completed, failed, warning, failed_uids)
        if store.error and failed:
            rsp.get_command_set().add(R.ErrorComment, [store.error[:64]])
        self.send(rsp, sop_class)
        log("C-MOVE from %s %s: %d sub-op(s), completed %d failed %d warning %d, dropped %d%s, "
            "0x%04X%s%s" % (self.calling, desc, len(todo), completed, failed, warning,
                            len(dropped), " (reported completed)" if report_dropped and dropped else "",
                            status, "" if with_counts else " (no counts sent)",
                            " (%s)" % store.error if store.error else ""))

    def other(self, msg, command):
        cs = msg.get_command_set()
        sop_class = first(cs, R.AffectedSOPClassUID) or first(cs, R.RequestedSOPClassUID)
        rsp_cs = odil.DataSet()
        rsp_cs.add(R.CommandField, [command | 0x8000])
        rsp_cs.add(R.MessageIDBeingRespondedTo, [int(first(cs, R.MessageID, "0"))])
        rsp_cs.add(R.CommandDataSetType, [0x0101])
        rsp_cs.add(R.Status, [UNRECOGNIZED])
        if sop_class:
            rsp_cs.add(R.AffectedSOPClassUID, [sop_class])
        self.send(odil.messages.Message(rsp_cs), sop_class)
        log("command 0x%04X from %s: not supported, 0x%04X" % (command, self.calling, UNRECOGNIZED))

    def serve(self):
        C = odil.messages.Message.Command
        while True:
            try:
                msg = self.assoc.receive_message()
            except odil.AssociationReleased:
                log("association from %s released" % self.calling)
                return
            except odil.AssociationAborted:
                log("association from %s aborted by the peer" % self.calling)
                return
            command = int(msg.get_command_field())
            if command == int(C.C_ECHO_RQ):
                self.echo(msg)
            elif command == int(C.C_FIND_RQ):
                self.find(msg)
            elif command == int(C.C_MOVE_RQ):
                self.move(msg)
            elif command == int(C.C_CANCEL_RQ):
                log("C-CANCEL from %s ignored" % self.calling)
            else:
                self.other(msg, command)


def selected(selector, n, inst):
    if not isinstance(selector, dict):
        return False
    every = selector.get("every_nth")
    if isinstance(every, int) and every > 0 and (n + 1) % every == 0:
        return True
    if inst.sop in (selector.get("uids") or []):
        return True
    if inst.modality in (selector.get("modalities") or []):
        return True
    return False


def describe(level, keys):
    parts = []
    for t, tag, _vr, _e, qv in keys:
        if t == T_QRLEVEL or (t >> 16) == 0:
            continue
        try:
            name = tag.get_name()
        except Exception:
            name = "%08X" % t
        v = "\\".join(qv)
        parts.append("%s=%s" % (name, v[:80] + "..." if len(v) > 80 else v))
    return "%s {%s}" % (level or "?", ", ".join(parts))


class Store:
    """The C-STORE sub-operations of one C-MOVE: one association per needed set of
    presentation contexts (odil keeps one transfer syntax per SOP class and association,
    so a compressed and an uncompressed file of the same class need two)."""

    def __init__(self, addr, dest_aet, originator, originator_mid):
        self.addr, self.dest_aet = addr, dest_aet
        self.originator, self.originator_mid = originator, originator_mid
        self.assoc, self.key, self.error, self.broken = None, None, None, False

    @staticmethod
    def ts_key(inst):
        return "native" if inst.ts in NATIVE_TS else inst.ts

    def contexts_for(self, inst, todo):
        """Contexts for `inst` and every later instance they can also carry."""
        chosen = {}
        for i in [inst] + todo:
            if i.sop_class not in chosen:
                chosen[i.sop_class] = self.ts_key(i)
        chosen[inst.sop_class] = self.ts_key(inst)
        return chosen

    def open(self, inst, todo):
        self.close()
        chosen = self.contexts_for(inst, todo)
        pcs = []
        for n, (sop_class, key) in enumerate(sorted(chosen.items())[:127]):
            tss = [EXPLICIT_LE, IMPLICIT_LE] if key == "native" else [key]
            pcs.append(odil.AssociationParameters.PresentationContext(
                2 * n + 1, sop_class, tss, odil.AssociationParameters.PresentationContext.Role.SCU))
        a = odil.Association()
        a.set_tcp_timeout(30)
        a.set_peer_host(self.addr[0])
        a.set_peer_port(self.addr[1])
        a.update_parameters().set_calling_ae_title(AET).set_called_ae_title(self.dest_aet) \
            .set_presentation_contexts(pcs)
        a.associate()
        nodelay()
        self.assoc, self.key = a, chosen

    def send(self, inst, todo):
        if self.broken:
            return UNABLE_TO_PROCESS
        try:
            if self.assoc is None or self.key.get(inst.sop_class) != self.ts_key(inst):
                self.open(inst, todo)
            with odil.open(inst.path) as stream:
                _meta, ds = odil.Reader.read_file(stream)
        except Exception as e:
            return self.failure(inst, e, broken=self.assoc is None)
        req = odil.messages.CStoreRequest(
            self.assoc.next_message_id(), inst.sop_class, inst.sop, 0, ds)
        cs = req.get_command_set()
        cs.add(R.MoveOriginatorApplicationEntityTitle, [self.originator])
        cs.add(R.MoveOriginatorMessageID, [self.originator_mid])
        try:
            self.assoc.send_message(req, inst.sop_class)
        except Exception as e:
            # The destination refused this SOP class (or transfer syntax): nothing was
            # sent and the association is still good for the other instances.
            return self.failure(inst, e, broken=not str(e).startswith("No transfer syntax"))
        try:
            rsp = odil.messages.CStoreResponse(self.assoc.receive_message())
        except Exception as e:
            return self.failure(inst, e, broken=True)
        status = int(rsp.get_status())
        if status != SUCCESS:
            log("C-STORE %s to %s: 0x%04X" % (inst.sop, self.dest_aet, status))
        return status

    def failure(self, inst, e, broken):
        self.error = "C-STORE to %s: %s" % (self.dest_aet, str(e).strip()[:100])
        log("%s (%s)" % (self.error, inst.sop))
        if broken:
            # An association that failed is not opened again for this C-MOVE: the rest fails.
            self.broken = True
            self.assoc = None
        return UNABLE_TO_PROCESS

    def close(self):
        if self.assoc is not None:
            try:
                self.assoc.release()
            except Exception as e:
                log("release of the association to %s: %s" % (self.dest_aet, e))
            self.assoc = None


def nodelay():
    """Turns Nagle's algorithm off on this process's TCP sockets. odil leaves it on and
    offers no option; a C-STORE of a few PDUs then waits for the peer's delayed ACK
    (about 25 ms an instance on loopback instead of 3 ms). The sockets are odil's: this
    runs in the process of one association, which owns no other."""
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)  # a dup
        except (OSError, ValueError):
            continue
        try:
            if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6):
                s.getpeername()
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        finally:
            s.close()


def load_quirks(path):
    if not path:
        return {}
    try:
        with open(path) as f:
            q = json.load(f)
        if not isinstance(q, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return {}
    except Exception as e:
        log("quirks file %s unreadable (%s): no quirks" % (path, e))
        return {}
    unknown = sorted(set(q) - KNOWN_QUIRKS)
    if unknown:
        log("unknown quirks ignored: %s" % ", ".join(unknown))
    return q


def load_destinations(path):
    table = {}
    if not path:
        return table
    try:
        with open(path) as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) == 3:
                    table[parts[0]] = (parts[1], int(parts[2]))
    except (OSError, ValueError) as e:
        log("destination table %s unreadable: %s" % (path, e))
    return table


def run_association(port, index, args):
    """The odil side of one connection (a process of its own)."""
    assoc = odil.Association()
    assoc.set_tcp_timeout(args.idle_timeout)
    try:
        assoc.receive_association("v4", port)
    except Exception as e:
        log("association not received: %s" % str(e).strip())
        return 1
    nodelay()
    quirks = load_quirks(args.quirks)
    a = Association(assoc, index, quirks, load_destinations(args.destinations))
    active = {k: v for k, v in quirks.items() if v not in (False, None)}
    log("association from %s to %s (%d instances served%s)" % (
        a.calling, a.called, len(index.instances),
        ", quirks " + json.dumps(active, sort_keys=True) if active else ""))
    if a.called != AET:
        log("called AE %r is not %r: A-ABORT" % (a.called, AET))
        assoc.abort(0, 0)
        return 0
    try:
        a.serve()
    except Exception as e:
        log("association from %s ended: %s" % (a.calling, str(e).strip()[:200]))
        try:
            assoc.abort(0, 0)
        except Exception:
            pass
        return 1
    return 0


# ---------------------------------------------------------------------------------
# Processes: the listener, one relay per connection, odil behind it.

def die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def reserve_port():
    """A bound, non-listening socket on a port no other socket holds. Kept until odil has
    our connection: odil binds the same port (both set SO_REUSEADDR, and Linux lets that
    pass while neither listens), and no other worker can be handed it meanwhile."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 0))
    return s


def relay(a, b):
    """Copies bytes both ways until one side closes (then what it sent is delivered, and
    the relay ends: a DICOM peer that closed has nothing more to say), or one fails."""
    for s in (a, b):
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = {a: b, b: a}
    out = {a: bytearray(), b: bytearray()}  # bytes waiting to be written to the key
    closed = False
    while True:
        if closed and not out[a] and not out[b]:
            return
        rl = [] if closed else [s for s in (a, b) if len(out[peer[s]]) < (1 << 20)]
        wl = [s for s in (a, b) if out[s]]
        r, w, _ = select.select(rl, wl, [], 5.0)
        try:
            for s in r:
                data = s.recv(1 << 16)
                if data:
                    out[peer[s]] += data
                else:
                    closed = True
            for s in w:
                n = s.send(out[s])
                del out[s][:n]
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return


def handle_connection(conn, index, args):
    """Runs in a child process: forks odil on a private port, relays the connection."""
    for attempt in range(3):
        reservation = reserve_port()
        port = reservation.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            conn.close()
            reservation.close()
            os._exit(run_association(port, index, args))
        inner = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                pid = None
                break
            try:
                inner = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                time.sleep(0.01)
        reservation.close()
        if inner is None:
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            log("odil did not listen on private port %d (attempt %d)" % (port, attempt + 1))
            continue
        relay(conn, inner)
        conn.close()
        inner.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return 0
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return 0
    conn.close()
    return 1


def main():
    global LOG_FD, AET
    p = argparse.ArgumentParser(description="Q/R SCP on python3-odil with vendor quirks")
    p.add_argument("--aet", default="ODIL_QR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="folder of DICOM files to serve")
    p.add_argument("--quirks", help="JSON file of quirks, read at each association")
    p.add_argument("--destinations", help='C-MOVE destinations, lines "AET HOST PORT"')
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="seconds an association may stay silent")
    p.add_argument("--log", help="log file (default: stderr)")
    args = p.parse_args()
    AET = args.aet
    if args.log:
        LOG_FD = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    children = set()

    def stop(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Python ignores SIGPIPE already: a closed socket is an error, not a death.

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(64)
    listener.settimeout(0.5)
    index = Index(args.dir)
    index.scan()
    log("%s listening on %s:%d, serving %s (%d instances), quirks %s, destinations %s" % (
        AET, args.host, args.port, args.dir, len(index.instances), args.quirks, args.destinations))
    try:
        while True:
            while children:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if not pid:
                    break
                children.discard(pid)
            try:
                conn, _addr = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            index.scan()  # the folder may have changed since the last association
            pid = os.fork()
            if pid == 0:
                os.setpgid(0, 0)
                die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                listener.close()
                try:
                    code = handle_connection(conn, index, args)
                except BaseException as e:
                    log("connection handler failed: %s" % e)
                    code = 1
                os._exit(code)
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass
            children.add(pid)
            conn.close()
    finally:
        listener.close()
        for pid in children:
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        log("stopped")


if __name__ == "__main__":
    main()
