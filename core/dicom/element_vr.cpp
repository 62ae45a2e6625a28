// rtb_ds_set_vr: sets an element with a VR the caller names, for elements the
// data dictionary cannot type — the private elements of a site block, which
// rtb_ds_set would otherwise create as UN. Additive to element.cpp; used by the
// RT record builder (its prototype is in core/rtrecord/internal.h until it
// moves into dicom.h).
#include "internal.hpp"

#include <cstdio>
#include <cstring>

using namespace rtb;

extern "C" int rtb_ds_set_vr(rtb_ds *ds, const char *tag_text, const char *vr,
                             const char *const *values, size_t count, rtb_dicom_error *err)
{
    clear_error(err);
    if (!ds || !tag_text || !vr) return fail(err, RTB_DICOM_E_INVALID, "no dataset, tag or VR");
    unsigned g, e;
    char tail;
    if (sscanf(tag_text, "%4x,%4x%c", &g, &e, &tail) != 2)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is not a tag of the form gggg,eeee", tag_text);
    DcmVR dvr(vr);
    // Only string VRs: binary values go through rtb_ds_set_bytes, sequences
    // through rtb_ds_item_append.
    static const char *const kText[] = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT",
                                        "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT", nullptr};
    bool ok = false;
    for (int i = 0; kText[i]; i++) ok = ok || strcmp(kText[i], vr) == 0;
    if (!ok) return fail(err, RTB_DICOM_E_INVALID, "%s: VR '%s' is not a text VR", tag_text, vr);
    OFString joined;
    for (size_t i = 0; i < count; i++) {
        if (!values[i]) return fail(err, RTB_DICOM_E_INVALID, "%s: value %zu is NULL", tag_text, i + 1);
        if (i) joined += '\\';
        joined += values[i];
    }
    DcmTag tag(static_cast<Uint16>(g), static_cast<Uint16>(e), dvr);
    DcmElement *el = nullptr;
    OFCondition cond = DcmItem::newDicomElement(el, tag);
    if (cond.bad() || !el)
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot create element: %s", tag_text, cond.text());
    cond = count ? el->putOFStringArray(joined) : el->putString("");
    if (cond.good()) cond = ds->item->insert(el, OFTrue /* replace */);
    if (cond.bad()) {
        delete el;
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot set value: %s", tag_text, cond.text());
    }
    return 0;
}
