// Query/retrieve helpers shared by find, move and get: information models,
// levels, and the identifier sent on the wire.
#include "internal.hpp"

#include <cstring>

namespace rtb {

const char *level_name(rtb_dicom_level level)
{
    switch (level) {
    case RTB_QR_PATIENT: return "PATIENT";
    case RTB_QR_STUDY: return "STUDY";
    case RTB_QR_SERIES: return "SERIES";
    case RTB_QR_IMAGE: return "IMAGE";
    }
    return nullptr;
}

const char *find_model_uid(rtb_dicom_model model)
{
    return model == RTB_QR_PATIENT_ROOT ? UID_FINDPatientRootQueryRetrieveInformationModel
                                        : UID_FINDStudyRootQueryRetrieveInformationModel;
}

const char *move_model_uid(rtb_dicom_model model)
{
    return model == RTB_QR_PATIENT_ROOT ? UID_MOVEPatientRootQueryRetrieveInformationModel
                                        : UID_MOVEStudyRootQueryRetrieveInformationModel;
}

const char *get_model_uid(rtb_dicom_model model)
{
    return model == RTB_QR_PATIENT_ROOT ? UID_GETPatientRootQueryRetrieveInformationModel
                                        : UID_GETStudyRootQueryRetrieveInformationModel;
}

std::unique_ptr<DcmDataset> make_identifier(const rtb_ds *identifier, rtb_dicom_level level,
                                            rtb_dicom_error *err)
{
    const char *name = level_name(level);
    if (!name) {
        fail(err, RTB_DICOM_E_INVALID, "unknown query/retrieve level %d", (int)level);
        return nullptr;
    }
    if (!identifier) {
        fail(err, RTB_DICOM_E_INVALID, "no identifier dataset");
        return nullptr;
    }
    // A copy, so the caller's dataset can be reused for the next query.
    std::unique_ptr<DcmDataset> ds(new DcmDataset());
    DcmItem *src = identifier->item;
    for (DcmObject *o = src->nextInContainer(nullptr); o; o = src->nextInContainer(o)) {
        DcmElement *e = OFstatic_cast(DcmElement *, o);
        if (e->getTag().getGroup() == 0x0002) continue;
        ds->insert(OFstatic_cast(DcmElement *, e->clone()), OFTrue);
    }
    ds->putAndInsertString(DCM_QueryRetrieveLevel, name);
    // Our text is UTF-8: a value outside ASCII (a name to match) is declared so, or
    // the peer reads it in its own default set and matches nothing.
    OFString charset; // asked back empty counts as not declared
    ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset);
    if (charset.empty() && has_non_ascii_text(ds.get()))
        ds->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    return ds;
}

// A retrieve names exactly what it wants: each unique key from the top of the
// model down to the level must be present and free of wildcards. The old system
// sent "*" and "" above the level and got 0xC514 from ARIA; we refuse that here.
bool check_retrieve_keys(DcmDataset *ds, rtb_dicom_model model, rtb_dicom_level level,
                         rtb_dicom_error *err)
{
    std::vector<std::pair<DcmTagKey, const char *>> keys;
    if (model == RTB_QR_PATIENT_ROOT) keys.push_back({DCM_PatientID, "PatientID"});
    if (level >= RTB_QR_STUDY) keys.push_back({DCM_StudyInstanceUID, "StudyInstanceUID"});
    if (level >= RTB_QR_SERIES) keys.push_back({DCM_SeriesInstanceUID, "SeriesInstanceUID"});
    if (level >= RTB_QR_IMAGE) keys.push_back({DCM_SOPInstanceUID, "SOPInstanceUID"});
    for (auto &k : keys) {
        OFString v;
        if (ds->findAndGetOFStringArray(k.first, v).bad() || trim(v.c_str()).empty())
            return fail(err, RTB_DICOM_E_INVALID, "a %s-level retrieve needs %s",
                        level_name(level), k.second), false;
        if (v.find('*') != OFString_npos || v.find('?') != OFString_npos)
            return fail(err, RTB_DICOM_E_INVALID, "%s must not contain wildcards in a retrieve (got '%s')",
                        k.second, v.c_str()), false;
    }
    return true;
}

bool check_model_level(rtb_dicom_model model, rtb_dicom_level level, rtb_dicom_error *err)
{
    if (model != RTB_QR_STUDY_ROOT && model != RTB_QR_PATIENT_ROOT)
        return fail(err, RTB_DICOM_E_INVALID, "unknown information model %d", (int)model), false;
    if (!level_name(level))
        return fail(err, RTB_DICOM_E_INVALID, "unknown query/retrieve level %d", (int)level), false;
    if (model == RTB_QR_STUDY_ROOT && level == RTB_QR_PATIENT)
        return fail(err, RTB_DICOM_E_INVALID,
                    "the Study Root model has no PATIENT level; use the Patient Root model"), false;
    return true;
}

void collect_failed_uids(DcmDataset *rsp_ids, rtb_dicom_retrieve_result *out)
{
    if (!rsp_ids || !out) return;
    OFString list;
    if (rsp_ids->findAndGetOFStringArray(DCM_FailedSOPInstanceUIDList, list).bad() || list.empty())
        return;
    std::vector<std::string> uids;
    size_t start = 0;
    std::string s = list.c_str();
    while (start <= s.size()) {
        size_t bs = s.find('\\', start);
        std::string one = trim(s.substr(start, bs == std::string::npos ? std::string::npos : bs - start));
        if (!one.empty()) uids.push_back(one);
        if (bs == std::string::npos) break;
        start = bs + 1;
    }
    if (uids.empty()) return;
    out->failed_uids = static_cast<char **>(calloc(uids.size(), sizeof(char *)));
    if (!out->failed_uids) return;
    for (const std::string &u : uids) {
        char *p = strdup(u.c_str());
        if (!p) break;
        out->failed_uids[out->n_failed_uids++] = p;
    }
}

} // namespace rtb

extern "C" void rtb_dicom_retrieve_result_clear(rtb_dicom_retrieve_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_failed_uids; i++) free(r->failed_uids[i]);
    free(r->failed_uids);
    memset(r, 0, sizeof *r);
}
