// rtb_ds_set_vr: sets an element with a VR the caller names: for elements the
// data dictionary cannot type (the private elements of a site block, which
// rtb_ds_set would create as UN), and for writers that know their VRs and set
// many elements (the RT record builder: no dictionary lookup per element).
// Additive to element.cpp; its prototype is in core/rtrecord/internal.h until
// it moves into dicom.h.
#include "internal.hpp"

#include <cstdio>
#include <cstring>

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
    // Constructed directly: DcmItem::newDicomElement makes an element of
    // unknown VR for a private tag whose creator it has not seen, whatever VR
    // the tag carries. Only string VRs: binary values go through
    // rtb_ds_set_bytes, sequences through rtb_ds_item_append. The VR is matched
    // on its two letters: naming it by text (DcmVR("DS")) searches DCMTK's VR
    // table, which a record with thousands of elements feels.
    const DcmTagKey key(static_cast<Uint16>(g), static_cast<Uint16>(e));
    DcmElement *el = nullptr;
    switch (vr[0] && vr[1] && !vr[2] ? (vr[0] << 8) | vr[1] : 0) {
    case ('A' << 8) | 'E': el = new DcmApplicationEntity(DcmTag(key, EVR_AE)); break;
    case ('A' << 8) | 'S': el = new DcmAgeString(DcmTag(key, EVR_AS)); break;
    case ('C' << 8) | 'S': el = new DcmCodeString(DcmTag(key, EVR_CS)); break;
    case ('D' << 8) | 'A': el = new DcmDate(DcmTag(key, EVR_DA)); break;
    case ('D' << 8) | 'S': el = new DcmDecimalString(DcmTag(key, EVR_DS)); break;
    case ('D' << 8) | 'T': el = new DcmDateTime(DcmTag(key, EVR_DT)); break;
    case ('I' << 8) | 'S': el = new DcmIntegerString(DcmTag(key, EVR_IS)); break;
    case ('L' << 8) | 'O': el = new DcmLongString(DcmTag(key, EVR_LO)); break;
    case ('L' << 8) | 'T': el = new DcmLongText(DcmTag(key, EVR_LT)); break;
    case ('P' << 8) | 'N': el = new DcmPersonName(DcmTag(key, EVR_PN)); break;
    case ('S' << 8) | 'H': el = new DcmShortString(DcmTag(key, EVR_SH)); break;
    case ('S' << 8) | 'T': el = new DcmShortText(DcmTag(key, EVR_ST)); break;
    case ('T' << 8) | 'M': el = new DcmTime(DcmTag(key, EVR_TM)); break;
    case ('U' << 8) | 'C': el = new DcmUnlimitedCharacters(DcmTag(key, EVR_UC)); break;
    case ('U' << 8) | 'I': el = new DcmUniqueIdentifier(DcmTag(key, EVR_UI)); break;
    case ('U' << 8) | 'R': el = new DcmUniversalResourceIdentifierOrLocator(DcmTag(key, EVR_UR)); break;
    case ('U' << 8) | 'T': el = new DcmUnlimitedText(DcmTag(key, EVR_UT)); break;
    default: return fail(err, RTB_DICOM_E_INVALID, "%s: VR '%s' is not a text VR", tag_text, vr);
    }
    OFCondition cond = EC_Normal;
    if (count == 1 && values[0]) {
        // One value (nearly every element a builder writes): no joined copy.
        cond = el->putString(values[0], static_cast<Uint32>(strlen(values[0])));
        if (cond.good()) cond = ds->item->insert(el, OFTrue /* replace */);
        if (cond.bad()) {
            delete el;
            return fail(err, RTB_DICOM_E_INVALID, "%s: cannot set value: %s", tag_text, cond.text());
        }
        return 0;
    }
    OFString joined;
    for (size_t i = 0; i < count; i++) {
        if (!values[i]) {
            delete el;
            return fail(err, RTB_DICOM_E_INVALID, "%s: value %zu is NULL", tag_text, i + 1);
        }
        if (i) joined += '\\';
        joined += values[i];
    }
    cond = count ? el->putOFStringArray(joined) : el->putString("");
    if (cond.good()) cond = ds->item->insert(el, OFTrue /* replace */);
    if (cond.bad()) {
        delete el;
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot set value: %s", tag_text, cond.text());
    }
    return 0;
}
