// Names for UIDs in messages ("MR Image Storage in JPEG 2000", not "1.2.840..."),
// and UID values read the way real files carry them (VR UN included).
#include "internal.hpp"

#include <cctype>
#include <cstring>

namespace rtb {

// DCMTK's SOP class names are CamelCase keywords ("RTDoseStorage"); a space before
// each new word reads better in a sentence: "RT Dose Storage".
static std::string spaced(const char *keyword)
{
    std::string out;
    size_t n = strlen(keyword);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = static_cast<unsigned char>(keyword[i]);
        if (i > 0 && isupper(c)) {
            unsigned char prev = static_cast<unsigned char>(keyword[i - 1]);
            bool next_lower = i + 1 < n && islower(static_cast<unsigned char>(keyword[i + 1]));
            if (islower(prev) || isdigit(prev) || (isupper(prev) && next_lower)) out += ' ';
        }
        out += static_cast<char>(c);
    }
    return out;
}

std::string uid_name(const std::string &uid)
{
    if (uid.empty()) return "(no UID)";
    DcmXfer x(uid.c_str());
    if (x.getXfer() != EXS_Unknown) return x.getXferName();
    const char *name = dcmFindNameOfUID(uid.c_str(), nullptr);
    if (!name) return uid;
    return spaced(name);
}

// A UID element as text. Files exported by some archives carry SOP Class UID or
// Transfer Syntax UID with VR UN (explicit VR): findAndGetOFString then yields
// the first byte in hex ("31"), so the raw bytes are read instead.
std::string read_uid(DcmItem *item, const DcmTagKey &key)
{
    if (!item) return std::string();
    DcmElement *e = nullptr;
    if (item->findAndGetElement(key, e).bad() || !e) return std::string();
    DcmEVR vr = e->ident();
    if (vr == EVR_UN || vr == EVR_OB || vr == EVR_UNKNOWN || vr == EVR_UNKNOWN2B) {
        Uint8 *bytes = nullptr;
        if (e->getUint8Array(bytes).bad() || !bytes) return std::string();
        std::string s(reinterpret_cast<const char *>(bytes), e->getLength());
        while (!s.empty() && (s.back() == '\0' || s.back() == ' ')) s.pop_back();
        for (char c : s)
            if (!(isdigit(static_cast<unsigned char>(c)) || c == '.')) return std::string();
        return s;
    }
    OFString v;
    if (e->getOFString(v, 0).bad()) return std::string();
    return trim(v.c_str());
}

bool has_non_ascii_text(DcmItem *ds)
{
    for (DcmObject *o = ds->nextInContainer(nullptr); o; o = ds->nextInContainer(o)) {
        DcmElement *e = OFstatic_cast(DcmElement *, o);
        if (!e->isAffectedBySpecificCharacterSet()) continue;
        char *text = nullptr;
        if (e->getString(text).bad() || !text) continue;
        for (const unsigned char *c = reinterpret_cast<const unsigned char *>(text); *c; c++)
            if (*c >= 0x80 || *c == 0x1B) return true; // 0x1B: an ISO 2022 escape
    }
    return false;
}

bool is_announced_instance(DcmItem *ds, const T_DIMSE_C_StoreRQ &req)
{
    return read_uid(ds, DCM_SOPInstanceUID) == req.AffectedSOPInstanceUID &&
           read_uid(ds, DCM_SOPClassUID) == req.AffectedSOPClassUID;
}

} // namespace rtb

extern "C" void rtb_dicom_uid_name(const char *uid, char *out, size_t size)
{
    if (!out || size == 0) return;
    if (!rtb::ensure_init(nullptr)) {
        rtb::copy_str(out, size, uid);
        return;
    }
    rtb::copy_str(out, size, rtb::uid_name(uid ? uid : "").c_str());
}
