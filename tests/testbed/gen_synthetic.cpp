// gen_synthetic: writes fake radiotherapy patients for the testbed, through
// rtbackup's own dataset API (so the generator also exercises it).
//
//   gen_synthetic OUTDIR [--patients N] [--slices K] [--size PIXELS] [--implicit]
//
// Each patient "TEST^PATIENTnnn" (ID RTBnnn) gets one study with a CT series of
// K slices, an RT Structure Set, an RT Plan and an RT Dose, each in its own
// series. UIDs are deterministic (same arguments, same UIDs), nothing is real.
// Files are named <SOPInstanceUID>.dcm; one line per file is printed:
// "<patient id> <modality> <path>".
#include "dicom/dicom.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

rtb_dicom_error g_err;

[[noreturn]] void die(const char *what)
{
    fprintf(stderr, "gen_synthetic: %s: %s\n", what, g_err.message);
    exit(1);
}

std::string uid(const std::vector<std::string> &names)
{
    std::vector<const char *> p;
    p.push_back("rtbackup-synthetic");
    for (const std::string &n : names) p.push_back(n.c_str());
    char out[RTB_DICOM_UID_MAX];
    if (rtb_dicom_uid_from_names(p.data(), p.size(), out, &g_err) != 0) die("uid");
    return out;
}

void set(rtb_ds *ds, const char *kw, const std::string &value)
{
    const char *v = value.c_str();
    if (rtb_ds_set(ds, kw, &v, 1, &g_err) != 0) die(kw);
}

void set_multi(rtb_ds *ds, const char *kw, const std::vector<std::string> &values)
{
    std::vector<const char *> v;
    for (const std::string &s : values) v.push_back(s.c_str());
    if (rtb_ds_set(ds, kw, v.data(), v.size(), &g_err) != 0) die(kw);
}

rtb_ds *append(rtb_ds *ds, const char *kw)
{
    rtb_ds *item = nullptr;
    if (rtb_ds_item_append(ds, kw, &item, &g_err) != 0) die(kw);
    return item;
}

struct Patient {
    int n;
    std::string id, name, study_uid, frame_uid, date;
};

rtb_ds *base(const Patient &p, const char *sop_class, const std::string &sop_uid,
             const char *modality, const std::string &series_uid, int series_number)
{
    rtb_ds *ds = nullptr;
    if (rtb_ds_new(&ds, &g_err) != 0) die("new");
    set(ds, "SpecificCharacterSet", "ISO_IR 100");
    set(ds, "SOPClassUID", sop_class);
    set(ds, "SOPInstanceUID", sop_uid);
    set(ds, "StudyDate", p.date);
    set(ds, "StudyTime", "090000");
    set(ds, "AccessionNumber", "ACC" + p.id.substr(3));
    set(ds, "Modality", modality);
    set(ds, "Manufacturer", "rtbackup synthetic");
    set(ds, "ReferringPhysicianName", "");
    set(ds, "PatientName", p.name);
    set(ds, "PatientID", p.id);
    set(ds, "PatientBirthDate", "19700101");
    set(ds, "PatientSex", "O");
    set(ds, "StudyInstanceUID", p.study_uid);
    set(ds, "SeriesInstanceUID", series_uid);
    set(ds, "StudyID", "S" + std::to_string(p.n));
    set(ds, "SeriesNumber", std::to_string(series_number));
    set(ds, "InstanceNumber", "1");
    return ds;
}

void save(rtb_ds *ds, const std::string &dir, const std::string &sop_uid, const Patient &p,
          const char *modality, bool implicit)
{
    rtb_ds_save_options opts = {implicit ? RTB_DS_XFER_IMPLICIT_LE : RTB_DS_XFER_EXPLICIT_LE};
    std::string path = dir + "/" + sop_uid + ".dcm";
    if (rtb_ds_save(ds, path.c_str(), &opts, &g_err) != 0) die("save");
    printf("%s %s %s\n", p.id.c_str(), modality, path.c_str());
    rtb_ds_free(ds);
}

void write_ct(const Patient &p, int slices, int size, const std::string &dir, bool implicit)
{
    std::string series = uid({p.id, "ct-series"});
    for (int z = 0; z < slices; z++) {
        std::string sop = uid({p.id, "ct", std::to_string(z)});
        rtb_ds *ds = base(p, "1.2.840.10008.5.1.4.1.1.2", sop, "CT", series, 1);
        set(ds, "InstanceNumber", std::to_string(z + 1));
        set_multi(ds, "ImageType", {"ORIGINAL", "PRIMARY", "AXIAL"});
        set(ds, "FrameOfReferenceUID", p.frame_uid);
        set(ds, "PositionReferenceIndicator", "");
        set_multi(ds, "ImagePositionPatient", {"-100", "-100", std::to_string(z * 3)});
        set_multi(ds, "ImageOrientationPatient", {"1", "0", "0", "0", "1", "0"});
        set(ds, "SliceThickness", "3");
        set(ds, "SliceLocation", std::to_string(z * 3));
        set_multi(ds, "PixelSpacing", {"1", "1"});
        set(ds, "SamplesPerPixel", "1");
        set(ds, "PhotometricInterpretation", "MONOCHROME2");
        set(ds, "Rows", std::to_string(size));
        set(ds, "Columns", std::to_string(size));
        set(ds, "BitsAllocated", "16");
        set(ds, "BitsStored", "12");
        set(ds, "HighBit", "11");
        set(ds, "PixelRepresentation", "0");
        set(ds, "RescaleIntercept", "-1024");
        set(ds, "RescaleSlope", "1");
        set(ds, "KVP", "120");
        // A disc of "water" in "air", different per patient and slice.
        std::vector<unsigned short> px(static_cast<size_t>(size) * size);
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                double dx = x - size / 2.0, dy = y - size / 2.0;
                bool inside = std::sqrt(dx * dx + dy * dy) < size * 0.4;
                px[static_cast<size_t>(y) * size + x] =
                    static_cast<unsigned short>(inside ? 1024 + ((x + y + z + p.n) % 40) : 24);
            }
        if (rtb_ds_set_bytes(ds, "PixelData", px.data(), px.size() * 2, &g_err) != 0) die("pixels");
        save(ds, dir, sop, p, "CT", implicit);
    }
}

void write_rtstruct(const Patient &p, const std::string &dir, bool implicit)
{
    std::string sop = uid({p.id, "rtstruct"});
    rtb_ds *ds = base(p, "1.2.840.10008.5.1.4.1.1.481.3", sop, "RTSTRUCT", uid({p.id, "rtstruct-series"}), 2);
    set(ds, "StructureSetLabel", "SYNTH");
    set(ds, "StructureSetDate", p.date);
    set(ds, "StructureSetTime", "100000");
    rtb_ds *ref = append(ds, "ReferencedFrameOfReferenceSequence");
    set(ref, "FrameOfReferenceUID", p.frame_uid);
    // The CT series the contours were drawn on: what a backup must keep with the
    // structure set (rtbackup's reference completeness follows this path).
    rtb_ds *ref_study = append(ref, "RTReferencedStudySequence");
    set(ref_study, "ReferencedSOPClassUID", "1.2.840.10008.3.1.2.3.1");
    set(ref_study, "ReferencedSOPInstanceUID", p.study_uid);
    rtb_ds *ref_series = append(ref_study, "RTReferencedSeriesSequence");
    set(ref_series, "SeriesInstanceUID", uid({p.id, "ct-series"}));
    rtb_ds *roi = append(ds, "StructureSetROISequence");
    set(roi, "ROINumber", "1");
    set(roi, "ReferencedFrameOfReferenceUID", p.frame_uid);
    set(roi, "ROIName", "BODY");
    set(roi, "ROIGenerationAlgorithm", "MANUAL");
    rtb_ds *contour_roi = append(ds, "ROIContourSequence");
    set_multi(contour_roi, "ROIDisplayColor", {"255", "0", "0"});
    set(contour_roi, "ReferencedROINumber", "1");
    rtb_ds *contour = append(contour_roi, "ContourSequence");
    set(contour, "ContourGeometricType", "CLOSED_PLANAR");
    set(contour, "NumberOfContourPoints", "4");
    set_multi(contour, "ContourData", {"-50", "-50", "0", "50", "-50", "0", "50", "50", "0", "-50", "50", "0"});
    rtb_ds *obs = append(ds, "RTROIObservationsSequence");
    set(obs, "ObservationNumber", "1");
    set(obs, "ReferencedROINumber", "1");
    set(obs, "RTROIInterpretedType", "EXTERNAL");
    set(obs, "ROIInterpreter", "");
    save(ds, dir, sop, p, "RTSTRUCT", implicit);
}

void write_rtplan(const Patient &p, const std::string &dir, bool implicit)
{
    std::string sop = uid({p.id, "rtplan"});
    rtb_ds *ds = base(p, "1.2.840.10008.5.1.4.1.1.481.5", sop, "RTPLAN", uid({p.id, "rtplan-series"}), 3);
    set(ds, "RTPlanLabel", "PLAN1");
    set(ds, "RTPlanDate", p.date);
    set(ds, "RTPlanTime", "110000");
    set(ds, "RTPlanGeometry", "PATIENT");
    set(ds, "FrameOfReferenceUID", p.frame_uid);
    rtb_ds *rs = append(ds, "ReferencedStructureSetSequence");
    set(rs, "ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.481.3");
    set(rs, "ReferencedSOPInstanceUID", uid({p.id, "rtstruct"}));
    rtb_ds *fg = append(ds, "FractionGroupSequence");
    set(fg, "FractionGroupNumber", "1");
    set(fg, "NumberOfFractionsPlanned", "30");
    set(fg, "NumberOfBeams", "2");
    set(fg, "NumberOfBrachyApplicationSetups", "0");
    for (int b = 1; b <= 2; b++) {
        rtb_ds *rb = append(fg, "ReferencedBeamSequence");
        set(rb, "ReferencedBeamNumber", std::to_string(b));
        set(rb, "BeamMeterset", "100.5");
        rtb_ds *beam = append(ds, "BeamSequence");
        set(beam, "BeamNumber", std::to_string(b));
        set(beam, "BeamName", b == 1 ? "AP" : "PA");
        set(beam, "BeamType", "STATIC");
        set(beam, "RadiationType", "PHOTON");
        set(beam, "TreatmentMachineName", "LINAC1");
        set(beam, "PrimaryDosimeterUnit", "MU");
        set(beam, "SourceAxisDistance", "1000");
        set(beam, "TreatmentDeliveryType", "TREATMENT");
        set(beam, "NumberOfWedges", "0");
        set(beam, "NumberOfCompensators", "0");
        set(beam, "NumberOfBoli", "0");
        set(beam, "NumberOfBlocks", "0");
        set(beam, "FinalCumulativeMetersetWeight", "1");
        set(beam, "NumberOfControlPoints", "2");
        for (int cp = 0; cp < 2; cp++) {
            rtb_ds *c = append(beam, "ControlPointSequence");
            set(c, "ControlPointIndex", std::to_string(cp));
            set(c, "CumulativeMetersetWeight", cp ? "1" : "0");
            if (cp == 0) {
                set(c, "NominalBeamEnergy", "6");
                set(c, "GantryAngle", b == 1 ? "0" : "180");
                set(c, "GantryRotationDirection", "NONE");
                set_multi(c, "IsocenterPosition", {"0", "0", "0"});
            }
        }
    }
    save(ds, dir, sop, p, "RTPLAN", implicit);
}

void write_rtdose(const Patient &p, const std::string &dir, bool implicit)
{
    std::string sop = uid({p.id, "rtdose"});
    rtb_ds *ds = base(p, "1.2.840.10008.5.1.4.1.1.481.2", sop, "RTDOSE", uid({p.id, "rtdose-series"}), 4);
    const int n = 8, frames = 4;
    set(ds, "FrameOfReferenceUID", p.frame_uid);
    set(ds, "SamplesPerPixel", "1");
    set(ds, "PhotometricInterpretation", "MONOCHROME2");
    set(ds, "NumberOfFrames", std::to_string(frames));
    set(ds, "FrameIncrementPointer", "(3004,000c)");
    set(ds, "Rows", std::to_string(n));
    set(ds, "Columns", std::to_string(n));
    set(ds, "BitsAllocated", "16");
    set(ds, "BitsStored", "16");
    set(ds, "HighBit", "15");
    set(ds, "PixelRepresentation", "0");
    set_multi(ds, "PixelSpacing", {"10", "10"});
    set_multi(ds, "ImagePositionPatient", {"-40", "-40", "0"});
    set_multi(ds, "ImageOrientationPatient", {"1", "0", "0", "0", "1", "0"});
    set_multi(ds, "GridFrameOffsetVector", {"0", "3", "6", "9"});
    set(ds, "DoseUnits", "GY");
    set(ds, "DoseType", "PHYSICAL");
    set(ds, "DoseSummationType", "PLAN");
    set(ds, "DoseGridScaling", "0.001");
    rtb_ds *plan = append(ds, "ReferencedRTPlanSequence");
    set(plan, "ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.481.5");
    set(plan, "ReferencedSOPInstanceUID", uid({p.id, "rtplan"}));
    std::vector<unsigned short> px(static_cast<size_t>(n) * n * frames);
    for (size_t i = 0; i < px.size(); i++) px[i] = static_cast<unsigned short>((i * 37 + p.n) % 60000);
    if (rtb_ds_set_bytes(ds, "PixelData", px.data(), px.size() * 2, &g_err) != 0) die("dose pixels");
    save(ds, dir, sop, p, "RTDOSE", implicit);
}

} // namespace

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gen_synthetic OUTDIR [--patients N] [--first N] [--date YYYYMMDD] "
                        "[--slices K] [--size PIXELS] [--implicit]\n");
        return 2;
    }
    std::string dir = argv[1];
    int patients = 3, slices = 10, size = 64, first = 1;
    const char *fixed_date = nullptr; // default: patient n is dated 2026-01-n
    bool implicit = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--patients") && i + 1 < argc) patients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--slices") && i + 1 < argc) slices = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--first") && i + 1 < argc) first = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--date") && i + 1 < argc) fixed_date = argv[++i];
        else if (!strcmp(argv[i], "--implicit")) implicit = true;
        else {
            fprintf(stderr, "gen_synthetic: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (patients < 1 || slices < 1 || size < 8 || size > 1024) {
        fprintf(stderr, "gen_synthetic: bad sizes\n");
        return 2;
    }
    if (rtb_dicom_init(&g_err) != 0) die("init");
    for (int n = first; n < first + patients; n++) {
        char id[16], name[32], date[16];
        snprintf(id, sizeof id, "RTB%03d", n);
        snprintf(name, sizeof name, "TEST^PATIENT%03d", n);
        if (fixed_date)
            snprintf(date, sizeof date, "%.8s", fixed_date);
        else
            snprintf(date, sizeof date, "202601%02d", 1 + (n - 1) % 28);
        Patient p{n, id, name, uid({id, "study"}), uid({id, "frame"}), date};
        write_ct(p, slices, size, dir, implicit);
        write_rtstruct(p, dir, implicit);
        write_rtplan(p, dir, implicit);
        write_rtdose(p, dir, implicit);
    }
    return 0;
}
