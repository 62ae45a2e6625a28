// Element access by keyword: get, set, remove, iterate, and sequence items.
// Values travel as strings (DCMTK's string form for numbers too), which is what
// the Lua binding turns into Lua values.
#include "internal.hpp"

#include <cstdlib>
#include <cstring>

using namespace rtb;

namespace {

bool is_binary_vr(DcmEVR vr)
{
    switch (vr) {
    case EVR_OB: case EVR_OW: case EVR_OF: case EVR_OD: case EVR_OL: case EVR_OV:
    case EVR_UN: case EVR_ox: case EVR_px: case EVR_pixelSQ: case EVR_pixelItem:
    case EVR_UNKNOWN: case EVR_UNKNOWN2B: case EVR_PixelData: case EVR_OverlayData:
        return true;
    default:
        return false;
    }
}

char *dup_string(const OFString &s)
{
    char *p = static_cast<char *>(malloc(s.length() + 1));
    if (p) memcpy(p, s.c_str(), s.length() + 1);
    return p;
}

// What fill_element reports as binary, and so what rtb_ds_get_bytes must hand out:
// the two decide from this one place.
bool is_binary_element(DcmElement *e)
{
    return is_binary_vr(e->ident()) || e->getTag() == DCM_PixelData;
}

int fill_element(DcmElement *e, rtb_ds_element *out, rtb_dicom_error *err)
{
    rtb_ds_element_clear(out);
    DcmTag tag = e->getTag();
    out->group = tag.getGTag();
    out->element = tag.getETag();
    const char *name = tag.getTagName();
    copy_str(out->keyword, sizeof out->keyword,
             (name && strcmp(name, DcmTag_ERROR_TagName) != 0) ? name : "");
    DcmVR vr(e->ident());
    copy_str(out->vr, sizeof out->vr, vr.getValidVRName());
    out->present = 1;
    out->length = e->getLength();
    if (e->ident() == EVR_SQ) {
        out->is_sequence = 1;
        out->count = OFstatic_cast(DcmSequenceOfItems *, e)->card();
        return 0;
    }
    if (is_binary_element(e)) {
        out->is_binary = 1;
        return 0;
    }
    unsigned long vm = e->getVM();
    if (out->length == 0) vm = 0; // an empty value has VM 0, whatever DCMTK says
    if (vm == 0) return 0;
    out->values = static_cast<char **>(calloc(vm, sizeof(char *)));
    if (!out->values) return fail(err, RTB_DICOM_E_INTERNAL, "out of memory");
    for (unsigned long i = 0; i < vm; i++) {
        OFString v;
        // normalize: drop the padding DICOM adds to reach an even length.
        e->getOFString(v, i, OFTrue);
        out->values[i] = dup_string(v);
        if (!out->values[i]) return fail(err, RTB_DICOM_E_INTERNAL, "out of memory");
        out->count = i + 1;
    }
    return 0;
}

} // namespace

extern "C" void rtb_ds_element_clear(rtb_ds_element *e)
{
    if (!e) return;
    if (e->values) {
        for (size_t i = 0; i < e->count; i++) free(e->values[i]);
        free(e->values);
    }
    memset(e, 0, sizeof *e);
}

extern "C" int rtb_ds_get(const rtb_ds *ds, const char *keyword, rtb_ds_element *out,
                          rtb_dicom_error *err)
{
    clear_error(err);
    rtb_ds_element_clear(out);
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    DcmElement *e = nullptr;
    if (ds->item->findAndGetElement(tag, e, OFFalse /* this level only */).bad() || !e) {
        out->group = tag.getGTag();
        out->element = tag.getETag();
        copy_str(out->keyword, sizeof out->keyword, keyword);
        copy_str(out->vr, sizeof out->vr, tag.getVR().getValidVRName());
        return 0; // absent: present = 0
    }
    if (fill_element(e, out, err) != 0) {
        rtb_ds_element_clear(out);
        return -1;
    }
    return 0;
}

extern "C" int rtb_ds_set(rtb_ds *ds, const char *keyword, const char *const *values,
                          size_t count, rtb_dicom_error *err)
{
    clear_error(err);
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    if (tag.getEVR() == EVR_SQ)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is a sequence: append items instead", keyword);
    if (tag.getGroup() == 0x0002)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is file meta information, written on save",
                    keyword);
    OFString joined;
    for (size_t i = 0; i < count; i++) {
        if (!values[i]) return fail(err, RTB_DICOM_E_INVALID, "%s: value %zu is NULL", keyword, i + 1);
        if (count > 1 && strchr(values[i], '\\'))
            return fail(err, RTB_DICOM_E_INVALID, "%s: value %zu contains a backslash", keyword,
                        i + 1);
        if (i) joined += '\\';
        joined += values[i];
    }
    // Build the new element first, so a value DCMTK cannot parse (a number that
    // is not one) leaves the dataset as it was.
    DcmElement *e = nullptr;
    OFCondition cond = DcmItem::newDicomElement(e, tag);
    if (cond.bad() || !e)
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot create element: %s", keyword, cond.text());
    cond = count ? e->putOFStringArray(joined) : e->putString("");
    if (cond.bad()) {
        delete e;
        return fail(err, RTB_DICOM_E_INVALID, "%s: invalid value '%s': %s", keyword, joined.c_str(),
                    cond.text());
    }
    cond = ds->item->insert(e, OFTrue /* replace */);
    if (cond.bad()) {
        delete e;
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot insert: %s", keyword, cond.text());
    }
    return 0;
}

extern "C" int rtb_ds_remove(rtb_ds *ds, const char *keyword, rtb_dicom_error *err)
{
    clear_error(err);
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    DcmElement *e = ds->item->remove(tag);
    if (e) {
        // Handles to items of a removed sequence must not outlive it.
        if (e->ident() == EVR_SQ) {
            DcmSequenceOfItems *sq = OFstatic_cast(DcmSequenceOfItems *, e);
            for (unsigned long i = 0; i < sq->card(); i++) ds->root->views.erase(sq->getItem(i));
        }
        delete e;
    }
    return 0;
}

extern "C" size_t rtb_ds_count(const rtb_ds *ds)
{
    return ds ? ds->item->card() : 0;
}

extern "C" int rtb_ds_element_at(const rtb_ds *ds, size_t index, rtb_ds_element *out,
                                 rtb_dicom_error *err)
{
    clear_error(err);
    rtb_ds_element_clear(out);
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmElement *e = ds->item->getElement(OFstatic_cast(unsigned long, index));
    if (!e) return fail(err, RTB_DICOM_E_INVALID, "element index %zu out of range", index);
    if (fill_element(e, out, err) != 0) {
        rtb_ds_element_clear(out);
        return -1;
    }
    return 0;
}

static int find_sequence(const rtb_ds *ds, const char *keyword, DcmSequenceOfItems **sq,
                         rtb_dicom_error *err)
{
    *sq = nullptr;
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    DcmElement *e = nullptr;
    if (ds->item->findAndGetElement(tag, e, OFFalse).bad() || !e) return 0;
    if (e->ident() != EVR_SQ)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is not a sequence", keyword);
    *sq = OFstatic_cast(DcmSequenceOfItems *, e);
    return 0;
}

extern "C" int rtb_ds_item_count(const rtb_ds *ds, const char *keyword, size_t *count,
                                 rtb_dicom_error *err)
{
    clear_error(err);
    *count = 0;
    DcmSequenceOfItems *sq;
    if (find_sequence(ds, keyword, &sq, err) != 0) return -1;
    if (sq) *count = sq->card();
    return 0;
}

extern "C" int rtb_ds_item(rtb_ds *ds, const char *keyword, size_t index, rtb_ds **item,
                           rtb_dicom_error *err)
{
    clear_error(err);
    *item = nullptr;
    DcmSequenceOfItems *sq;
    if (find_sequence(ds, keyword, &sq, err) != 0) return -1;
    DcmItem *it = sq ? sq->getItem(OFstatic_cast(unsigned long, index)) : nullptr;
    if (!it) return fail(err, RTB_DICOM_E_INVALID, "%s has no item %zu", keyword, index);
    *item = ds->view_of(it);
    return 0;
}

extern "C" int rtb_ds_item_append(rtb_ds *ds, const char *keyword, rtb_ds **item,
                                  rtb_dicom_error *err)
{
    clear_error(err);
    *item = nullptr;
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    if (tag.getEVR() != EVR_SQ)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is not a sequence", keyword);
    // What DCMTK's findOrCreateSequenceItem(tag, it, -2) ("append a new item") does,
    // with the sequence found by walking the item's list once: DCMTK's search builds
    // a stack of the path, the costliest part of appending an item, and a record
    // appends hundreds. Anything but a sequence under that tag takes DCMTK's path.
    DcmItem *parent = ds->item;
    DcmObject *found = nullptr;
    for (DcmObject *o = parent->nextInContainer(nullptr); o; o = parent->nextInContainer(o))
        if (o->getGTag() == tag.getGTag() && o->getETag() == tag.getETag()) {
            found = o;
            break;
        }
    DcmItem *it = nullptr;
    OFCondition cond = EC_Normal;
    if (found && found->ident() != EVR_SQ && found->ident() != EVR_pixelSQ) {
        cond = parent->findOrCreateSequenceItem(tag, it, -2);
    } else {
        DcmSequenceOfItems *sq = OFstatic_cast(DcmSequenceOfItems *, found);
        if (!sq) {
            sq = new DcmSequenceOfItems(tag);
            cond = parent->insert(sq, OFTrue /* replace */);
            if (cond.bad()) delete sq;
        }
        if (cond.good()) {
            it = new DcmItem();
            cond = sq->append(it);
            if (cond.bad()) {
                delete it;
                it = nullptr;
            }
        }
    }
    if (cond.bad() || !it)
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot append an item: %s", keyword,
                    cond.bad() ? cond.text() : "Illegal call, perhaps wrong parameters");
    *item = ds->view_of(it);
    return 0;
}

extern "C" int rtb_ds_item_at(rtb_ds *ds, size_t element_index, size_t item_index, rtb_ds **item,
                              rtb_dicom_error *err)
{
    clear_error(err);
    *item = nullptr;
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmElement *e = ds->item->getElement(OFstatic_cast(unsigned long, element_index));
    if (!e || e->ident() != EVR_SQ)
        return fail(err, RTB_DICOM_E_INVALID, "element %zu is not a sequence", element_index);
    DcmItem *it = OFstatic_cast(DcmSequenceOfItems *, e)->getItem(
        OFstatic_cast(unsigned long, item_index));
    if (!it) return fail(err, RTB_DICOM_E_INVALID, "sequence has no item %zu", item_index);
    *item = ds->view_of(it);
    return 0;
}

// Binary values. OW is handed out as little-endian bytes; DCMTK keeps it in host
// order, which on every platform Debian builds rtbackup for is little endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "rtb_ds_*_bytes assume a little-endian host");

extern "C" int rtb_ds_get_bytes(const rtb_ds *ds, const char *keyword, void **data, size_t *len,
                                rtb_dicom_error *err)
{
    clear_error(err);
    *data = nullptr;
    *len = 0;
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    DcmElement *e = nullptr;
    if (ds->item->findAndGetElement(tag, e, OFFalse).bad() || !e || e->getLength() == 0) return 0;
    if (!is_binary_element(e))
        return fail(err, RTB_DICOM_E_INVALID, "'%s' (VR %s) is not a byte value", keyword,
                    DcmVR(e->ident()).getValidVRName());
    // By the value's own VR (getVR(): Pixel Data's class reports OB or OW there, not in
    // ident()), each through the accessor its class implements. Anything else binary
    // (UN, and the unknown VR of a private element read as implicit VR, such as a private
    // sequence encoded as UN) is bytes as they are.
    const void *src = nullptr;
    OFCondition cond;
    switch (e->getVR()) {
    case EVR_OW: { Uint16 *p = nullptr; cond = e->getUint16Array(p); src = p; break; }
    case EVR_OF: { Float32 *p = nullptr; cond = e->getFloat32Array(p); src = p; break; }
    case EVR_OD: { Float64 *p = nullptr; cond = e->getFloat64Array(p); src = p; break; }
    case EVR_OL: { Uint32 *p = nullptr; cond = e->getUint32Array(p); src = p; break; }
    case EVR_OV: { Uint64 *p = nullptr; cond = e->getUint64Array(p); src = p; break; }
    default: { Uint8 *p = nullptr; cond = e->getUint8Array(p); src = p; break; }
    }
    if (cond.bad() || !src)
        return fail(err, RTB_DICOM_E_INVALID, "'%s': cannot read bytes (%s)", keyword,
                    cond.bad() ? cond.text() : "compressed?");
    size_t n = e->getLength();
    void *copy = malloc(n);
    if (!copy) return fail(err, RTB_DICOM_E_INTERNAL, "out of memory");
    memcpy(copy, src, n);
    *data = copy;
    *len = n;
    return 0;
}

extern "C" int rtb_ds_set_bytes(rtb_ds *ds, const char *keyword, const void *data, size_t len,
                                rtb_dicom_error *err)
{
    clear_error(err);
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    if (len > 0xFFFFFFFEu) return fail(err, RTB_DICOM_E_INVALID, "'%s': value too long", keyword);
    if (len && !data) return fail(err, RTB_DICOM_E_INVALID, "'%s': no data", keyword);
    DcmTag tag;
    if (!lookup_tag(keyword, tag, err)) return -1;
    DcmEVR vr = tag.getEVR();
    // Ambiguous dictionary VRs (Pixel Data is "OB or OW"): OW, as implicit VR would read it.
    if (vr == EVR_ox || vr == EVR_px) {
        tag.setVR(EVR_OW);
        vr = EVR_OW;
    }
    if (vr != EVR_OB && vr != EVR_OW && vr != EVR_UN)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' (VR %s) does not take bytes", keyword,
                    tag.getVR().getValidVRName());
    if (vr == EVR_OW && (len % 2) != 0)
        return fail(err, RTB_DICOM_E_INVALID, "'%s' is OW: the byte count must be even", keyword);
    DcmElement *e = nullptr;
    OFCondition cond = DcmItem::newDicomElement(e, tag);
    if (cond.bad() || !e) return fail(err, RTB_DICOM_E_INVALID, "%s: cannot create element", keyword);
    if (vr == EVR_OW)
        cond = e->putUint16Array(static_cast<const Uint16 *>(data), static_cast<unsigned long>(len / 2));
    else
        cond = e->putUint8Array(static_cast<const Uint8 *>(data), static_cast<unsigned long>(len));
    if (cond.good()) cond = ds->item->insert(e, OFTrue);
    if (cond.bad()) {
        delete e;
        return fail(err, RTB_DICOM_E_INVALID, "%s: cannot set bytes: %s", keyword, cond.text());
    }
    return 0;
}
