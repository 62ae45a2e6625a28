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

#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcwcache.h>

#include <openssl/evp.h>

namespace {

class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new()) { ok_ = ctx_ && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1; }
    ~Sha256() { EVP_MD_CTX_free(ctx_); }
    bool ok() const { return ok_; }
    void update(const void *p, size_t n)
    {
        if (ok_ && n) ok_ = EVP_DigestUpdate(ctx_, p, n) == 1;
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
    EVP_MD_CTX *ctx_;
    bool ok_;
};

bool skipped(const DcmTagKey &tag, bool top_level)
{
    if (tag.getElement() == 0x0000) return true; // group length
    if (top_level && tag.getGroup() == 0x0002) return true;
    return tag == DCM_DataSetTrailingPadding;
}

// Streams DCMTK's own encoder output for one element into the hash, 64 KiB at a
// time, so multi-hundred-megabyte pixel data never needs a second copy in memory.
bool hash_encoded(DcmElement *e, E_TransferSyntax xfer, Sha256 &h, OFCondition &cond)
{
    unsigned char buf[65536];
    DcmOutputBufferStream out(buf, sizeof buf);
    DcmWriteCache wcache;
    e->transferInit();
    do {
        cond = e->write(out, xfer, EET_UndefinedLength, &wcache);
        void *p = nullptr;
        offile_off_t len = 0;
        out.flushBuffer(p, len);
        h.update(p, static_cast<size_t>(len));
    } while (cond == EC_StreamNotifyClient);
    e->transferEnd();
    return cond.good();
}

bool hash_item(DcmItem *item, bool top_level, E_TransferSyntax orig, Sha256 &h, OFCondition &cond);

bool hash_element(DcmElement *e, E_TransferSyntax orig, Sha256 &h, OFCondition &cond)
{
    const DcmTag &tag = e->getTag();
    if (e->ident() == EVR_SQ) {
        DcmSequenceOfItems *sq = OFstatic_cast(DcmSequenceOfItems *, e);
        h.u16(tag.getGroup()); h.u16(tag.getElement()); h.u32(0xFFFFFFFFu);
        for (unsigned long i = 0; i < sq->card(); i++) {
            h.u16(0xFFFE); h.u16(0xE000); h.u32(0xFFFFFFFFu);
            if (!hash_item(sq->getItem(i), false, orig, h, cond)) return false;
            h.u16(0xFFFE); h.u16(0xE00D); h.u32(0);
        }
        h.u16(0xFFFE); h.u16(0xE0DD); h.u32(0);
        return true;
    }
    E_TransferSyntax xfer = EXS_LittleEndianImplicit;
    if (tag == DCM_PixelData && e->ident() != EVR_UNKNOWN) {
        // Compressed pixel data cannot be written as implicit VR without
        // decompressing; hash it encapsulated, as it was received.
        DcmPixelData *pd = OFdynamic_cast(DcmPixelData *, e);
        if (pd && !pd->canWriteXfer(EXS_LittleEndianImplicit, orig)) xfer = orig;
    }
    return hash_encoded(e, xfer, h, cond);
}

bool hash_item(DcmItem *item, bool top_level, E_TransferSyntax orig, Sha256 &h, OFCondition &cond)
{
    for (unsigned long i = 0; i < item->card(); i++) {
        DcmElement *e = item->getElement(i);
        if (skipped(e->getTag(), top_level)) continue;
        if (!hash_element(e, orig, h, cond)) return false;
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
    Sha256 h;
    if (!h.ok()) return fail(err, RTB_DICOM_E_INTERNAL, "SHA-256 unavailable in OpenSSL");
    E_TransferSyntax orig = EXS_LittleEndianExplicit;
    if (DcmDataset *d = ds->root->dataset())
        if (d->getOriginalXfer() != EXS_Unknown) orig = d->getOriginalXfer();
    OFCondition cond = EC_Normal;
    if (!hash_item(ds->item, ds->root == ds, orig, h, cond))
        return fail(err, RTB_DICOM_E_IO, "cannot encode dataset for digest: %s", cond.text());
    if (!h.hex(hex)) return fail(err, RTB_DICOM_E_INTERNAL, "SHA-256 failed");
    return 0;
}
