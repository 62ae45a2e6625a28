// rtb_ds_digest: SHA-256 over a canonical encoding of the dataset content.
//
// Canonical form: every element in tag order, encoded as implicit VR little
// endian (tag, 32-bit length, value bytes little endian), sequences and items
// with undefined length and explicit delimiters. That encoding is what the same
// content looks like whichever uncompressed syntax it was read from, so a backup
// read back from Orthanc (explicit VR) hashes like the source read from ARIA
// (implicit VR). Left out on purpose:
//  - group 0002 (file meta information: describes the file, not the content);
//  - group length elements (gggg,0000): their values depend on the encoding;
//  - dataset trailing padding (FFFC,FFFC);
//  - VRs: an implicit-VR read turns unknown private elements into UN, and pixel
//    data is OW in implicit but may be OB in explicit files; the value bytes
//    are the same, and the value bytes are what a backup must preserve.
// Encapsulated (compressed) pixel data is hashed as its fragments, as stored.
#include "internal.hpp"

#include <cstring>

#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcwcache.h>

#include <openssl/evp.h>

namespace {

// SHA-256 fed through a buffer: a record's digest is a few hundred small pieces
// (tags, lengths, short values), and one EVP_DigestUpdate per piece cost more than
// the hashing.
class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new()) { ok_ = ctx_ && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1; }
    ~Sha256() { EVP_MD_CTX_free(ctx_); }
    bool ok() const { return ok_; }
    void update(const void *p, size_t n)
    {
        if (n > sizeof buf_ - used_) {
            flush();
            if (n >= sizeof buf_) {
                if (ok_) ok_ = EVP_DigestUpdate(ctx_, p, n) == 1;
                return;
            }
        }
        memcpy(buf_ + used_, p, n);
        used_ += n;
    }
    void u16(Uint16 v)
    {
        unsigned char b[2] = {static_cast<unsigned char>(v & 0xff), static_cast<unsigned char>(v >> 8)};
        update(b, 2);
    }
    void u32(Uint32 v)
    {
        unsigned char b[4];
        for (int i = 0; i < 4; i++) b[i] = static_cast<unsigned char>(v >> (8 * i));
        update(b, 4);
    }
    bool hex(char out[65])
    {
        flush();
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!ok_ || EVP_DigestFinal_ex(ctx_, md, &len) != 1 || len != 32) return false;
        static const char digits[] = "0123456789abcdef";
        for (unsigned i = 0; i < 32; i++) {
            out[2 * i] = digits[md[i] >> 4];
            out[2 * i + 1] = digits[md[i] & 15];
        }
        out[64] = '\0';
        return true;
    }

private:
    void flush()
    {
        if (ok_ && used_) ok_ = EVP_DigestUpdate(ctx_, buf_, used_) == 1;
        used_ = 0;
    }
    EVP_MD_CTX *ctx_;
    bool ok_;
    size_t used_ = 0;
    unsigned char buf_[8192];
};

// One digest's encoder: DCMTK's own element writer, streaming into the hash 16 KiB
// at a time (multi-hundred-megabyte pixel data never needs a second copy in memory),
// set up once per digest rather than once per element. On the stack: a heap block
// this size per digest made malloc consolidate and trim the heap every record.
struct Encoder {
    Sha256 h;
    E_TransferSyntax orig = EXS_LittleEndianExplicit;
    unsigned char buf[16384];
    DcmOutputBufferStream out{buf, sizeof buf};
    DcmWriteCache wcache;
    OFCondition cond = EC_Normal;
};

bool skipped(const DcmTagKey &tag, bool top_level)
{
    if (tag.getElement() == 0x0000) return true; // group length
    if (top_level && tag.getGroup() == 0x0002) return true;
    return tag == DCM_DataSetTrailingPadding;
}

bool hash_encoded(DcmElement *e, E_TransferSyntax xfer, Encoder &enc)
{
    e->transferInit();
    do {
        enc.cond = e->write(enc.out, xfer, EET_UndefinedLength, &enc.wcache);
        void *p = nullptr;
        offile_off_t len = 0;
        enc.out.flushBuffer(p, len);
        enc.h.update(p, static_cast<size_t>(len));
    } while (enc.cond == EC_StreamNotifyClient);
    e->transferEnd();
    return enc.cond.good();
}

// The string VRs, whose classes all derive from DcmByteString; UI pads with NUL.
bool is_byte_string(DcmEVR vr)
{
    switch (vr) {
    case EVR_AE: case EVR_AS: case EVR_CS: case EVR_DA: case EVR_DS: case EVR_DT: case EVR_IS:
    case EVR_LO: case EVR_LT: case EVR_PN: case EVR_SH: case EVR_ST: case EVR_TM: case EVR_UC:
    case EVR_UI: case EVR_UR: case EVR_UT:
        return true;
    default:
        return false;
    }
}

// A text element encoded as DcmByteString::write encodes it in implicit VR little
// endian, without going through DCMTK's writer (most of a record's digest time):
// tag, even length, the value as getString gives it (trailing padding removed, as
// makeDicomByteString does first) and one padding character if its length is odd.
// false when the value is not in memory (empty, or unreadable): the writer decides.
bool hash_text(DcmElement *e, Encoder &enc)
{
    char *value = nullptr;
    Uint32 len = 0;
    if (e->getString(value, len).bad() || !value) return false;
    const DcmTag &tag = e->getTag();
    const bool odd = len & 1;
    enc.h.u16(tag.getGroup());
    enc.h.u16(tag.getElement());
    enc.h.u32(len + odd);
    enc.h.update(value, len);
    if (odd) {
        const char pad = e->ident() == EVR_UI ? '\0' : ' ';
        enc.h.update(&pad, 1);
    }
    return true;
}

bool hash_item(DcmItem *item, bool top_level, Encoder &enc);

bool hash_element(DcmElement *e, Encoder &enc)
{
    const DcmTag &tag = e->getTag();
    Sha256 &h = enc.h;
    if (e->ident() == EVR_SQ) {
        DcmSequenceOfItems *sq = OFstatic_cast(DcmSequenceOfItems *, e);
        h.u16(tag.getGroup()); h.u16(tag.getElement()); h.u32(0xFFFFFFFFu);
        // nextInContainer, not getItem(i): DCMTK finds the i-th by walking from the
        // first, which made a control point sequence quadratic.
        for (DcmObject *o = sq->nextInContainer(nullptr); o; o = sq->nextInContainer(o)) {
            h.u16(0xFFFE); h.u16(0xE000); h.u32(0xFFFFFFFFu);
            if (!hash_item(OFstatic_cast(DcmItem *, o), false, enc)) return false;
            h.u16(0xFFFE); h.u16(0xE00D); h.u32(0);
        }
        h.u16(0xFFFE); h.u16(0xE0DD); h.u32(0);
        return true;
    }
    if (is_byte_string(e->ident()) && hash_text(e, enc)) return true;
    E_TransferSyntax xfer = EXS_LittleEndianImplicit;
    if (tag == DCM_PixelData && e->ident() != EVR_UNKNOWN) {
        // Compressed pixel data cannot be written as implicit VR without
        // decompressing; hash it encapsulated, as it was received.
        DcmPixelData *pd = OFdynamic_cast(DcmPixelData *, e);
        if (pd && !pd->canWriteXfer(EXS_LittleEndianImplicit, enc.orig)) xfer = enc.orig;
    }
    return hash_encoded(e, xfer, enc);
}

bool hash_item(DcmItem *item, bool top_level, Encoder &enc)
{
    for (DcmObject *o = item->nextInContainer(nullptr); o; o = item->nextInContainer(o)) {
        DcmElement *e = OFstatic_cast(DcmElement *, o);
        if (skipped(e->getTag(), top_level)) continue;
        if (!hash_element(e, enc)) return false;
    }
    return true;
}

} // namespace

using namespace rtb;

extern "C" int rtb_ds_digest(const rtb_ds *ds, char hex[65], rtb_dicom_error *err)
{
    clear_error(err);
    hex[0] = '\0';
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    Encoder enc;
    if (!enc.h.ok()) return fail(err, RTB_DICOM_E_INTERNAL, "SHA-256 unavailable in OpenSSL");
    if (DcmDataset *d = ds->root->dataset())
        if (d->getOriginalXfer() != EXS_Unknown) enc.orig = d->getOriginalXfer();
    if (!hash_item(ds->item, ds->root == ds, enc))
        return fail(err, RTB_DICOM_E_IO, "cannot encode dataset for digest: %s", enc.cond.text());
    if (!enc.h.hex(hex)) return fail(err, RTB_DICOM_E_INTERNAL, "SHA-256 failed");
    return 0;
}
