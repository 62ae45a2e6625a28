// rtb_ds_set_vr: sets an element with a VR the caller names: for elements the
// data dictionary cannot type (the private elements of a site block, which
// rtb_ds_set would create as UN), and for writers that know their VRs and set
// many elements (the RT record builder: no dictionary lookup per element).
// Additive to element.cpp; its prototype is in core/rtrecord/internal.h until
// it moves into dicom.h.
#include "internal.hpp"

#include <cstdio>
#include <cstring>
#include <string>

using namespace rtb;

extern "C" int rtb_ds_set_vr(rtb_ds *ds, const char *tag_text, const char *vr,
                             const char *const *values, size_t count, rtb_dicom_error *err)
{
    clear_error(err);
    if (!ds || !tag_text || !vr) return fail(err, RTB_DICOM_E_INVALID, "no dataset, tag or VR");
    // "gggg,eeee" parsed by hand: sscanf costs more than the rest of a set.
    unsigned g = 0, e = 0;
    bool ok = strlen(tag_text) == 9 && tag_text[4] == ',';
    for (int i = 0; ok && i < 9; i++) {
        if (i == 4) continue;
        char c = tag_text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        ok = v >= 0;
        if (i < 4) g = (g << 4) | static_cast<unsigned>(v);
        else e = (e << 4) | static_cast<unsigned>(v);
    }
    if (!ok) return fail(err, RTB_DICOM_E_INVALID, "'%s' is not a tag of the form gggg,eeee", tag_text);
    if (g == 0x0002)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is file meta information, written on save", tag_text);
    DcmTag tag(static_cast<Uint16>(g), static_cast<Uint16>(e), DcmVR(vr));
    // Constructed directly: DcmItem::newDicomElement makes an element of
    // unknown VR for a private tag whose creator it has not seen, whatever VR
    // the tag carries. Only string VRs: binary values go through
    // rtb_ds_set_bytes, sequences through rtb_ds_item_append.
    DcmElement *el = nullptr;
    const std::string v(vr);
    if (v == "AE") el = new DcmApplicationEntity(tag);
    else if (v == "AS") el = new DcmAgeString(tag);
    else if (v == "CS") el = new DcmCodeString(tag);
    else if (v == "DA") el = new DcmDate(tag);
    else if (v == "DS") el = new DcmDecimalString(tag);
    else if (v == "DT") el = new DcmDateTime(tag);
    else if (v == "IS") el = new DcmIntegerString(tag);
    else if (v == "LO") el = new DcmLongString(tag);
    else if (v == "LT") el = new DcmLongText(tag);
    else if (v == "PN") el = new DcmPersonName(tag);
    else if (v == "SH") el = new DcmShortString(tag);
    else if (v == "ST") el = new DcmShortText(tag);
    else if (v == "TM") el = new DcmTime(tag);
    else if (v == "UC") el = new DcmUnlimitedCharacters(tag);
    else if (v == "UI") el = new DcmUniqueIdentifier(tag);
    else if (v == "UR") el = new DcmUniversalResourceIdentifierOrLocator(tag);
    else if (v == "UT") el = new DcmUnlimitedText(tag);
    else return fail(err, RTB_DICOM_E_INVALID, "%s: VR '%s' is not a text VR", tag_text, vr);
    OFString joined;
    for (size_t i = 0; i < count; i++) {
        if (!values[i]) {
            delete el;
            return fail(err, RTB_DICOM_E_INVALID, "%s: value %zu is NULL", tag_text, i + 1);
        }
        if (i) joined += '\\';
        joined += values[i];
    }
    OFCondition cond = count ? el->putOFStringArray(joined) : el->putString("");
    if (cond.good()) cond = ds->item->insert(el, OFTrue /* replace */);
    if (cond.bad()) {
        delete el;
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot set value: %s", tag_text, cond.text());
    }
    return 0;
}
